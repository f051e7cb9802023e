"""Shared gRPC channel and server options (keepalive, reuseport, message sizes).

Semantics: every gRPC client in loraplane builds its channel with ``CLIENT_OPTIONS`` and every
server with ``SERVER_OPTIONS`` so that the servers always allow the pings the clients send
(client keepalive every 20 s; the server accepts pings every 10 s or more, even without calls).
A server's receive limit comes from its component's config (`--max-receive-bytes` on the worker and
the control plane): grpc core refuses a larger request with RESOURCE_EXHAUSTED ("Received message
larger than max") before any handler runs, and the gateway answers that with 413.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Default receive/send limit (bytes) for messages on loraplane channels and servers."""

CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.so_reuseport", 0),
)


def client_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Return ``CLIENT_OPTIONS`` plus send/receive message size limits."""
    return [
        *CLIENT_OPTIONS,
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def server_options(max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Return ``SERVER_OPTIONS`` plus a receive size limit (larger messages get RESOURCE_EXHAUSTED)."""
    return [
        *SERVER_OPTIONS,
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
