"""TLS for every gRPC hop: one config, the `--tls-*` flags, and the server and channel credentials.

Semantics: a process gets `--tls-cert`, `--tls-key` and `--tls-ca` (PEM files), used for every gRPC
socket it opens:
- as a server (control plane, worker), `cert` + `key` make its port TLS; with `ca` as well, clients
  must present a certificate signed by that CA (mutual TLS), else the handshake fails.
- as a client (worker -> control plane, gateway -> workers and control plane, admin CLI), `ca` is the
  root the server's certificate must chain to (the system roots when only a client certificate is
  given); `cert` + `key`, when given, are presented as the client certificate (mutual TLS).
No flag: plaintext, as before. The server name checked is the host dialed, so a certificate for a fleet
on one machine names `127.0.0.1` (an IP SAN) and `localhost`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class TLSConfig:
    """PEM paths; all None means plaintext. Files are checked readable here, so a typo fails at start."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together (the certificate and its private key)")
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if path is None:
                continue
            resolved = Path(path).expanduser()
            if not resolved.is_file():
                raise ValueError(f"{flag} {path}: no such file")
            object.__setattr__(self, flag.removeprefix("--tls-"), resolved)

    @property
    def enabled(self) -> bool:
        """True when any TLS file is configured (then clients speak TLS)."""
        return self.cert is not None or self.ca is not None

    @property
    def serves_tls(self) -> bool:
        """True when a server of this process listens with TLS (it has a certificate)."""
        return self.cert is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS server credentials; client certificates are required when a CA is configured (mTLS)."""
        if self.cert is None or self.key is None:
            raise ValueError("a TLS server needs --tls-cert and --tls-key")
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        ca = self.ca.read_bytes() if self.ca is not None else None
        return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials: `ca` as the root (system roots when None), `cert`/`key` the client's."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca is not None else None,
            private_key=self.key.read_bytes() if self.key is not None else None,
            certificate_chain=self.cert.read_bytes() if self.cert is not None else None,
        )

    def argv(self) -> list[str]:
        """The flags that give a child process this config."""
        items = (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca))
        return [part for flag, path in items if path is not None for part in (flag, str(path))]


PLAINTEXT = TLSConfig()


def add_tls_arguments(parser: argparse.ArgumentParser | Any, role: str) -> None:
    """Add --tls-cert/--tls-key/--tls-ca; `role` says in the help what they secure for this command."""
    parser.add_argument(
        "--tls-cert", default=None, metavar="PEM", help=f"certificate (chain) for {role}; needs --tls-key"
    )
    parser.add_argument("--tls-key", default=None, metavar="PEM", help="private key of --tls-cert")
    parser.add_argument(
        "--tls-ca",
        default=None,
        metavar="PEM",
        help="CA that peers' certificates must chain to: servers then require client certificates "
        "(mutual TLS); clients verify the server against it",
    )


def tls_from_args(args: argparse.Namespace) -> TLSConfig:
    """The TLSConfig of parsed --tls-* flags (ValueError naming the flag on a bad one)."""
    return TLSConfig(
        cert=_path(args.tls_cert),
        key=_path(args.tls_key),
        ca=_path(args.tls_ca),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_port(server: grpc.aio.Server | grpc.Server, address: str, tls: TLSConfig) -> int:
    """Bind `address` on `server`, with TLS when `tls` has a certificate; returns the port (0: failed)."""
    if tls.serves_tls:
        return server.add_secure_port(address, tls.server_credentials())
    return server.add_insecure_port(address)


def aio_channel(target: str, tls: TLSConfig, options: list | None = None) -> grpc.aio.Channel:
    """An asyncio channel to `target`: TLS when `tls` is enabled, plaintext otherwise."""
    if tls.enabled:
        return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)


def channel(target: str, tls: TLSConfig, options: list | None = None) -> grpc.Channel:
    """A blocking channel to `target`: TLS when `tls` is enabled, plaintext otherwise."""
    if tls.enabled:
        return grpc.secure_channel(target, tls.channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)
