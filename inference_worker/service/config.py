"""Configuration of the worker service (gRPC server, control-plane link, static adapters, the engine's).

Built once in `loraplane.inference_worker.service.cli` from the command line and the environment, then
passed down frozen; it carries the engine's own `EngineConfig` (torch-free), so every bad value, the
engine's included, is rejected while parsing, before a port is bound or a model loaded.
This is the only module of the worker service that reads environment variables.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from loraplane.grpc_options import MAX_MESSAGE_BYTES
from loraplane.inference_worker.config import CUDA_MAX_NUM_SEQS, EngineConfig
from loraplane.tls import PLAINTEXT, TLSConfig

ENV_CONTROL_PLANE = "LORAPLANE_CONTROL_PLANE"
ENV_WORKER_ID = "LORAPLANE_WORKER_ID"
ENV_WORKER_TOKEN = "LORAPLANE_WORKER_TOKEN"
DEFAULT_LISTEN = "127.0.0.1:50061"  # loopback unless told otherwise: Generate and reflection are open
DEFAULT_MAX_NUM_SEQS = CUDA_MAX_NUM_SEQS  # the CLI derives the queue from the engine's resolved value
QUEUE_LEN_PER_SEQ = 4


@dataclass(frozen=True)
class LoRAModulePath:
    """A static adapter from `--lora-modules`, as vLLM's `LoRAModulePath`.

    Semantics: `name` is what requests put in `model`; `path` is the adapter directory or hub id, shown
    as the adapter's `root` in ListModels exactly as given; `base_model_name` only sets the `parent`.
    """

    name: str
    path: str
    base_model_name: str | None = None


def parse_lora_module(value: str) -> LoRAModulePath:
    """Parse one `--lora-modules` item in either of vLLM's formats: `name=path` or a JSON object.

    Raises ValueError with vLLM's wording ("Invalid JSON format ...", "Invalid fields ...").
    """
    if "=" in value and "," not in value and not value.lstrip().startswith("{"):
        name, path = value.split("=", 1)
        if not name or not path:
            raise ValueError(f"Invalid fields for --lora-modules: {value!r} needs both a name and a path")
        return LoRAModulePath(name=name, path=path)
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Invalid JSON format for --lora-modules: {value!r} ({exc}); give name=path or "
            '{"name": ..., "path": ..., "base_model_name": ...}'
        ) from exc
    allowed = {"name", "path", "base_model_name"}
    if not isinstance(raw, dict) or not {"name", "path"} <= raw.keys() or not raw.keys() <= allowed:
        raise ValueError(
            f"Invalid fields for --lora-modules: {value!r}; expected name=path or a JSON object with "
            '"name", "path" and optionally "base_model_name"'
        )
    if not all(isinstance(raw[k], str) and raw[k] for k in ("name", "path")):
        raise ValueError(f"Invalid fields for --lora-modules: {value!r}; name and path must be non-empty")
    return LoRAModulePath(name=raw["name"], path=raw["path"], base_model_name=raw.get("base_model_name"))


def parse_lora_modules(values: Sequence[str] | None) -> tuple[LoRAModulePath, ...]:
    """Parse every `--lora-modules` item; empty strings are skipped (vLLM gives [] for "")."""
    modules = tuple(parse_lora_module(v) for v in (values or ()) if v.strip())
    names = [m.name for m in modules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"--lora-modules names must be unique; repeated: {', '.join(duplicates)}")
    return modules


def split_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port); ValueError with the expected form."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:50061)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class WorkerServiceConfig:
    """Everything the worker service needs, the engine's configuration (`engine`) included.

    Semantics: `engine` is the validated `EngineConfig` the worker starts its engine with; the service
    reads its capacity (`max_num_seqs`, the LoRA limits) from there. `max_queue_len` bounds the sequences
    admitted beyond `engine.max_num_seqs`, a Generate call counting its `n`: a call that would take the
    sequences in flight past `max_num_seqs + max_queue_len` fails at once with RESOURCE_EXHAUSTED, and one
    with `n` above `max_num_seqs` with INVALID_ARGUMENT. `worker_token`, when set, is sent to the control
    plane as `authorization: Bearer <token>`. `advertise_endpoint` is what the control plane hands to
    gateways; by default it is the listen address with the bound port (the host's name when listening on
    every interface). `max_receive_bytes` is the largest gRPC message the server accepts; grpc core
    refuses a larger one with RESOURCE_EXHAUSTED ("Received message larger than max"), which the gateway
    answers with 413.
    """

    listen: str = DEFAULT_LISTEN
    control_plane: str | None = None
    worker_id: str = field(default_factory=socket.gethostname)
    advertise_endpoint: str | None = None
    max_queue_len: int = DEFAULT_MAX_NUM_SEQS * QUEUE_LEN_PER_SEQ
    shutdown_grace_s: float = 30.0
    heartbeat_interval_s: float = 5.0
    lora_modules: tuple[LoRAModulePath, ...] = ()
    worker_token: str = field(default="", repr=False)
    tls: TLSConfig = PLAINTEXT  # the server's port and the control-plane channel (loraplane.tls)
    max_receive_bytes: int = MAX_MESSAGE_BYTES
    metrics_port: int = 0  # Prometheus /metrics on the listen host; 0: off (loraplane.metrics)
    max_adapter_labels: int = 64  # adapter names with their own metrics label; the rest share "__other__"
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        split_host_port(self.listen)
        if self.control_plane:
            split_host_port(self.control_plane)
        if self.advertise_endpoint:
            split_host_port(self.advertise_endpoint)
        if not self.worker_id:
            raise ValueError("worker_id must not be empty")
        if self.max_queue_len < 0:
            raise ValueError(f"max_queue_len must be >= 0, got {self.max_queue_len}")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s must be > 0, got {self.heartbeat_interval_s}")
        if not 1024 <= self.max_receive_bytes <= 4 * MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_receive_bytes must be in [1024, {4 * MAX_MESSAGE_BYTES}], got {self.max_receive_bytes}"
            )
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"--metrics-port must be in [0, 65535] (0: off), got {self.metrics_port}")
        if self.max_adapter_labels < 0:
            raise ValueError(f"--max-adapter-labels must be >= 0, got {self.max_adapter_labels}")
        if self.lora_modules and not self.engine.enable_lora:
            raise ValueError("--lora-modules needs --enable-lora")

    @property
    def max_in_flight(self) -> int:
        """The most sequences admitted at once (running plus queued; a Generate call counts its `n`)."""
        return self.engine.max_num_seqs + self.max_queue_len

    def endpoint_for(self, bound_port: int) -> str:
        """The address other processes use to reach this worker's Inference service."""
        if self.advertise_endpoint:
            return self.advertise_endpoint
        host, _ = split_host_port(self.listen)
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"


def env_control_plane() -> str | None:
    """The control plane's address from `LORAPLANE_CONTROL_PLANE`, when set."""
    return os.environ.get(ENV_CONTROL_PLANE) or None


def env_worker_id() -> str | None:
    """The worker id from `LORAPLANE_WORKER_ID`, when set."""
    return os.environ.get(ENV_WORKER_ID) or None


def env_worker_token() -> str:
    """The token the control plane expects from workers (`LORAPLANE_WORKER_TOKEN`), empty when unset."""
    return os.environ.get(ENV_WORKER_TOKEN, "")
