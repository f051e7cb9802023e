"""The shared keepalive options: servers must allow every ping the clients send."""

from __future__ import annotations

from loraplane.grpc_options import CLIENT_OPTIONS, SERVER_OPTIONS, client_options, server_options


def test_server_allows_client_pings():
    client, server = dict(CLIENT_OPTIONS), dict(SERVER_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    assert client["grpc.keepalive_permit_without_calls"] == server["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.so_reuseport"] == 0


def test_message_limits():
    assert dict(server_options(1234))["grpc.max_receive_message_length"] == 1234
    assert dict(client_options(99))["grpc.max_send_message_length"] == 99
