"""The tokens `serve` and `up` run with (loraplane.tokens), the `--tls-*` config (loraplane.tls), and the
loopback default of the OpenAI API's address."""

from __future__ import annotations

import argparse
import importlib
import os
import stat
from pathlib import Path

import grpc
import pytest

from loraplane.cli import SUBCOMMANDS
from loraplane.gateway.envoy_config import EdgeConfig
from loraplane.tls import TLSConfig
from loraplane.tokens import ADMIN_TOKEN_FILE, WORKER_TOKEN_FILE, ensure_tokens, public
from tests.security.tls_certs import make_certs

ADMIN, WORKER = "LORAPLANE_ADMIN_TOKEN", "LORAPLANE_WORKER_TOKEN"


@pytest.fixture
def clean_env(monkeypatch):
    for name in (ADMIN, WORKER):  # setenv first: monkeypatch then restores what ensure_tokens sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("localhost", False), ("::1", False)]
    + [("0.0.0.0", True), ("::", True), ("192.0.2.2", True), ("example.com", True)],
)
def test_public_hosts(host, expected):
    assert public(host) is expected


def test_loopback_gets_a_fresh_worker_token_per_run_and_no_admin_token(clean_env, tmp_path):
    assert ensure_tokens(tmp_path, "127.0.0.1") == []
    first = os.environ[WORKER]
    assert len(first) >= 32 and ADMIN not in os.environ
    clean_env.delenv(WORKER)
    ensure_tokens(tmp_path, "127.0.0.1")
    assert os.environ[WORKER] != first
    assert list(tmp_path.iterdir()) == []  # nothing written on loopback


@pytest.mark.parametrize(("host", "expose_admin"), [("0.0.0.0", False), ("127.0.0.1", True)])
def test_beyond_loopback_tokens_are_made_once_kept_0600_and_reused(clean_env, tmp_path, host, expose_admin):
    lines = ensure_tokens(tmp_path / "data", host, expose_admin)
    admin, worker = os.environ[ADMIN], os.environ[WORKER]
    for name, token in ((ADMIN_TOKEN_FILE, admin), (WORKER_TOKEN_FILE, worker)):
        path = tmp_path / "data" / name
        assert path.read_text().strip() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(lines) == 1 and admin in lines[0] and "--admin-token-file" in lines[0]
    clean_env.delenv(ADMIN)
    clean_env.delenv(WORKER)
    again = ensure_tokens(tmp_path / "data", host, expose_admin)
    assert (os.environ[ADMIN], os.environ[WORKER]) == (admin, worker)
    assert admin not in again[0]  # printed once, at creation


def test_tokens_from_the_environment_win_and_are_never_written(clean_env, tmp_path):
    clean_env.setenv(ADMIN, "operator-admin")
    clean_env.setenv(WORKER, "operator-worker")
    assert ensure_tokens(tmp_path, "0.0.0.0") == []
    assert (os.environ[ADMIN], os.environ[WORKER]) == ("operator-admin", "operator-worker")
    assert list(tmp_path.iterdir()) == []


def test_a_token_file_others_can_read_is_refused(clean_env, tmp_path):
    (tmp_path / ADMIN_TOKEN_FILE).write_text("leaked\n")
    (tmp_path / ADMIN_TOKEN_FILE).chmod(0o644)
    clean_env.setenv(WORKER, "w")
    with pytest.raises(RuntimeError, match="chmod 600"):
        ensure_tokens(tmp_path, "0.0.0.0")


def test_tls_config_checks_its_files(tmp_path):
    certs = make_certs(tmp_path, ["127.0.0.1"])
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        TLSConfig(cert=certs.cert)
    with pytest.raises(ValueError, match="--tls-ca .*no such file"):
        TLSConfig(ca=tmp_path / "missing.pem")
    full = TLSConfig(cert=certs.cert, key=certs.key, ca=certs.ca)
    assert full.serves_tls and full.enabled and TLSConfig(ca=certs.ca).enabled
    assert not TLSConfig().enabled and TLSConfig().argv() == []
    assert full.argv() == certs.flags()
    assert isinstance(full.server_credentials(), grpc.ServerCredentials)
    with pytest.raises(ValueError, match="needs --tls-cert"):
        TLSConfig(ca=certs.ca).server_credentials()


def test_the_edge_asks_no_client_certificate(tmp_path):
    certs = make_certs(tmp_path, ["127.0.0.1"])
    with pytest.raises(ValueError, match="no client certificate"):
        EdgeConfig(
            gateways=[("127.0.0.1", 1)],
            workers=[("127.0.0.1", 2)],
            control_planes=[("127.0.0.1", 3)],
            tls=TLSConfig(cert=certs.cert, key=certs.key, ca=certs.ca),
        )
    assert Path(certs.key).stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("command", ["serve", "up", "gateway"])
def test_the_openai_api_listens_on_loopback_unless_told_otherwise(command):
    module = importlib.import_module(next(s.module for s in SUBCOMMANDS if s.name == command))
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    assert parser.parse_args([]).host == "127.0.0.1"
