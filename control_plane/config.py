"""Control-plane configuration: one frozen dataclass built at the entry point (the only env reads)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from loraplane.grpc_options import MAX_MESSAGE_BYTES
from loraplane.tls import PLAINTEXT, TLSConfig

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_ADMIN_TOKEN_ENV = "LORAPLANE_ADMIN_TOKEN"
DEFAULT_WORKER_TOKEN_ENV = "LORAPLANE_WORKER_TOKEN"
DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ControlPlaneConfig:
    """Everything `loraplane control-plane` needs.

    Semantics: `adapter_roots` are resolved (symlinks followed) once here; local adapter sources must lie
    under one of them. Tokens are secrets: they are never logged and `repr` hides them. An empty
    `admin_token` leaves the registry's mutating calls open, which only loopback allows. Closed by
    default: a `listen` address beyond loopback needs a `worker_token` and an `admin_token` (ValueError
    otherwise), since whoever registers as a worker receives users' prompts and whoever writes the
    registry chooses what they are served; on loopback empty tokens leave WorkerControl and the writes
    open to local processes (the server logs a warning). `tls` secures the port (loraplane.tls).
    """

    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("loraplane-data")
    adapter_roots: tuple[Path, ...] = ()
    allow_hub_sources: bool = False
    admin_token: str = field(default="", repr=False)
    worker_token: str = field(default="", repr=False)
    rollout_timeout_s: float = 30.0
    heartbeat_interval_s: int = 5
    heartbeat_timeout_s: float = 15.0
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    shutdown_grace_s: float = 2.0
    tls: TLSConfig = PLAINTEXT
    metrics_port: int = 0  # Prometheus /metrics on the listen host; 0: off (control_plane.metrics)

    def __post_init__(self) -> None:
        roots = tuple(Path(os.path.realpath(os.path.expanduser(root))) for root in self.adapter_roots)
        object.__setattr__(self, "adapter_roots", roots)
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if ":" not in self.listen:
            raise ValueError(f"--listen must be HOST:PORT, got {self.listen!r}")
        if not self.worker_token and not self.loopback:
            raise ValueError(
                f"listening on {self.listen} (beyond loopback) needs a worker token, or anyone who "
                "reaches the port can register as a worker and receive users' prompts: set "
                f"{DEFAULT_WORKER_TOKEN_ENV} (e.g. to the output of `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`) for the control plane and every worker"
            )
        if not self.admin_token and not self.loopback:
            raise ValueError(
                f"listening on {self.listen} (beyond loopback) needs an admin token, or anyone who reaches "
                f"the port can create and delete adapters: set {DEFAULT_ADMIN_TOKEN_ENV} (the admin CLI and "
                "REST callers send it as 'Authorization: Bearer <token>')"
            )
        if self.rollout_timeout_s <= 0:
            raise ValueError(f"rollout timeout must be > 0 s, got {self.rollout_timeout_s}")
        if self.heartbeat_interval_s < 1:
            raise ValueError(f"heartbeat interval must be >= 1 s, got {self.heartbeat_interval_s}")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"heartbeat timeout ({self.heartbeat_timeout_s} s) must exceed the interval "
                f"({self.heartbeat_interval_s} s); three intervals is a good choice"
            )
        if not 1024 <= self.max_receive_bytes <= MAX_MESSAGE_BYTES * 4:
            raise ValueError(f"max receive size {self.max_receive_bytes} is out of range")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port must be in [0, 65535] (0: off), got {self.metrics_port}")

    @property
    def loopback(self) -> bool:
        """True when `listen` is a loopback address (only local processes can reach it)."""
        return is_loopback(self.listen.rsplit(":", 1)[0])

    @classmethod
    def from_env(
        cls,
        admin_token_env: str = DEFAULT_ADMIN_TOKEN_ENV,
        worker_token_env: str = DEFAULT_WORKER_TOKEN_ENV,
        **kwargs,
    ) -> ControlPlaneConfig:
        """Build a config with the tokens read from the named environment variables."""
        admin = os.environ.get(admin_token_env, "") if admin_token_env else ""
        worker = os.environ.get(worker_token_env, "") if worker_token_env else ""
        return cls(admin_token=admin, worker_token=worker, **kwargs)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IPs (`127.0.0.0/8`, `[::1]`); False for names and `0.0.0.0`."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
