"""Where `loraplane serve/up` put the control plane (the admin CLI's default port when it is free), the
worker token each run makes, and what `up --expose-admin` needs."""

from __future__ import annotations

import argparse
import os
import socket

from loraplane import topology, up


def test_control_plane_takes_the_admin_cli_default_port_when_free(monkeypatch):
    monkeypatch.setattr(topology, "port_is_free", lambda port, host="127.0.0.1": True)
    assert topology.control_plane_port(None) == topology.CONTROL_PLANE_PORT
    hint = topology.admin_hint(f"127.0.0.1:{topology.CONTROL_PLANE_PORT}")
    assert hint == "admin CLI: loraplane adapters list"


def test_busy_default_port_falls_back_and_the_hint_names_the_address():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not topology.port_is_free(port)
    assert topology.control_plane_port(0) != 0 and topology.control_plane_port(1234) == 1234
    assert topology.admin_hint("127.0.0.1:4242").endswith("--control-plane 127.0.0.1:4242")


def test_fallback_when_the_default_port_is_taken(monkeypatch):
    monkeypatch.setattr(topology, "port_is_free", lambda port, host="127.0.0.1": False)
    assert topology.control_plane_port(None) != topology.CONTROL_PLANE_PORT


def test_each_run_gets_a_random_worker_token_unless_one_is_given(monkeypatch):
    monkeypatch.delenv(topology.WORKER_TOKEN_ENV, raising=False)
    topology.ensure_worker_token()
    generated = os.environ[topology.WORKER_TOKEN_ENV]
    assert len(generated) >= 32
    monkeypatch.delenv(topology.WORKER_TOKEN_ENV)
    topology.ensure_worker_token()
    assert os.environ[topology.WORKER_TOKEN_ENV] != generated
    monkeypatch.setenv(topology.WORKER_TOKEN_ENV, "operator-chosen")
    topology.ensure_worker_token()
    assert os.environ[topology.WORKER_TOKEN_ENV] == "operator-chosen"


def test_expose_admin_needs_envoy_and_an_admin_token(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    monkeypatch.delenv("LORAPLANE_ADMIN_TOKEN", raising=False)
    assert up.run(parser.parse_args(["--envoy", "--expose-admin"])) == 2
    assert "LORAPLANE_ADMIN_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("LORAPLANE_ADMIN_TOKEN", "secret")
    assert up.run(parser.parse_args(["--expose-admin"])) == 2
