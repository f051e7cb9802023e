"""Configuration of the OpenAI gateway, built once from the command line and the environment.

This is the only gateway module that reads environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loraplane.tls import PLAINTEXT, TLSConfig

ENV_CONTROL_PLANE = "LORAPLANE_CONTROL_PLANE"
ENV_RUNTIME_LORA = "LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING"
ENV_WORKERS = "LORAPLANE_WORKERS"
ENV_UVICORN_LOG_LEVEL = "LORAPLANE_UVICORN_LOG_LEVEL"
UVICORN_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
DEFAULT_PORT = 8000
# Half of gRPC's 16 MiB message limit, so every body that passes converts to a Generate message the worker
# accepts; ~2 million tokens of text, far past any context length. vLLM sets no limit.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# OpenAI's own maximum for `n`: every request OpenAI accepts is accepted here.
DEFAULT_MAX_N = 128


def split_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port); ValueError naming the expected form."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:50061)")
    return host.strip("[]"), int(port)


def env_flag(name: str) -> bool:
    """True when the variable is set to 1/true/yes/on (any case), as vLLM reads its flags."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs, frozen.

    Semantics: workers come from the control plane (`control_plane`, refreshed every
    `refresh_interval_s`) or from the static `workers` list (HOST:PORT each), or both. A worker that
    fails with UNAVAILABLE is skipped for `down_cooldown_s`. Adapter requests go to the adapter's
    rendezvous-hash worker unless its load exceeds the least-loaded worker's by more than
    `affinity_slack` requests. At most `max_adapter_labels` adapter names get their own metrics label.
    A request body over `max_request_bytes` is refused with 413 before it is parsed; `n` over `max_n`
    with 400. The gateway holds no admin token: the runtime LoRA routes forward the caller's own.
    `tls` secures its gRPC channels to the workers and the control plane (loraplane.tls); `https` (a
    certificate and key, no CA: OpenAI clients have no client certificate) makes its HTTP port HTTPS.
    `api_key` (env LORAPLANE_API_KEY or VLLM_API_KEY) guards the OpenAI routes (loraplane.gateway.auth).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    control_plane: str | None = None
    workers: tuple[str, ...] = ()
    allow_runtime_lora_updating: bool = False
    refresh_interval_s: float = 2.0
    down_cooldown_s: float = 5.0
    affinity_slack: int = 8
    max_adapter_labels: int = 64
    rpc_timeout_s: float = 10.0
    served_by_header: bool = True
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_n: int = DEFAULT_MAX_N
    tls: TLSConfig = PLAINTEXT
    https: TLSConfig = PLAINTEXT
    api_key: str | None = field(default=None, repr=False)  # gateway.auth; repr=False keeps it out of logs
    uvicorn_log_level: str = "warning"  # vLLM's --uvicorn-log-level: uvicorn's own loggers

    def __post_init__(self) -> None:
        if not self.control_plane and not self.workers:
            raise ValueError(
                "the gateway needs workers: pass --control-plane HOST:PORT (or set LORAPLANE_CONTROL_PLANE) "
                "or at least one --worker HOST:PORT"
            )
        for address in (self.control_plane, *self.workers):
            if address:
                split_host_port(address)
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        for name in ("refresh_interval_s", "down_cooldown_s", "rpc_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.affinity_slack < 0 or self.max_adapter_labels < 0:
            raise ValueError("affinity_slack and max_adapter_labels must be >= 0")
        if self.https.ca is not None or (self.https.enabled and not self.https.serves_tls):
            raise ValueError("HTTPS takes --ssl-certfile and --ssl-keyfile only (no client certificates)")
        if self.uvicorn_log_level not in UVICORN_LOG_LEVELS:
            raise ValueError(f"uvicorn_log_level must be one of {', '.join(UVICORN_LOG_LEVELS)}")
        for name in ("max_request_bytes", "max_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, **overrides) -> GatewayConfig:
        """Fill unset fields from LORAPLANE_* variables; explicit (not None) overrides win."""
        env_workers = tuple(w for w in os.environ.get(ENV_WORKERS, "").split(",") if w.strip())
        values = {
            "control_plane": os.environ.get(ENV_CONTROL_PLANE) or None,
            "workers": env_workers,
            "allow_runtime_lora_updating": env_flag(ENV_RUNTIME_LORA),
            "api_key": os.environ.get("LORAPLANE_API_KEY") or os.environ.get("VLLM_API_KEY") or None,
            "uvicorn_log_level": os.environ.get(ENV_UVICORN_LOG_LEVEL) or "warning",
        }
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        values["workers"] = tuple(values.get("workers", ()))
        return cls(**values)
