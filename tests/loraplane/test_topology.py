"""Where `loraplane serve/up` put the control plane (the admin CLI's default port when it is free), and
what `up --expose-admin` needs (the tokens they run with: tests/security/test_tokens.py)."""

from __future__ import annotations

import argparse
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


def test_expose_admin_needs_envoy(capsys):
    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    assert up.run(parser.parse_args(["--expose-admin"])) == 2
    assert "--expose-admin needs --envoy" in capsys.readouterr().err
