"""`loraplane worker`: run one inference worker (engine + gRPC server), standalone or under a control plane.

Engine flags keep vLLM's names. Importing this module is cheap (no torch): the engine loads in `run`.
The flags become one frozen `WorkerServiceConfig` (with the engine's `EngineConfig` inside) before anything
starts, so a bad value, the engine's included, exits 2 with a message naming the flag and nothing is
bound or loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import Any

from loraplane.grpc_options import MAX_MESSAGE_BYTES
from loraplane.inference_worker.config import CPU_MAX_NUM_SEQS, EngineConfig, parse_bytes
from loraplane.inference_worker.service.config import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_NUM_SEQS,
    QUEUE_LEN_PER_SEQ,
    WorkerServiceConfig,
    env_control_plane,
    env_worker_id,
    env_worker_token,
    parse_lora_modules,
    split_host_port,
)
from loraplane.metrics import add_metrics_port_argument
from loraplane.tls import add_tls_arguments, tls_from_args

logger = logging.getLogger(__name__)

# (flag, engine option, type, help); only flags given on the command line reach the engine.
ENGINE_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--model", "model", str, "model directory or hub id (default: the demo model SmolLM2-135M-Instruct)"),
    ("--tokenizer", "tokenizer", str, "tokenizer directory or hub id (default: the model's)"),
    ("--served-model-name", "served_model_name", str, "the base model's name in requests and ListModels"),
    ("--dtype", "dtype", str, "auto, float32, bfloat16 or float16 (default: auto)"),
    ("--device", "device", str, "auto, cpu or cuda[:N] (default: auto)"),
    (
        "--max-num-seqs",
        "max_num_seqs",
        int,
        f"most sequences per batch (default: {DEFAULT_MAX_NUM_SEQS} on CUDA, {CPU_MAX_NUM_SEQS} on CPU)",
    ),
    ("--max-model-len", "max_model_len", int, "context length (default: the model's; on CPU at most 2048)"),
    ("--max-num-batched-tokens", "max_num_batched_tokens", int, "most tokens per step"),
    (
        "--long-prefill-token-threshold",
        "long_prefill_token_threshold",
        int,
        "most prompt tokens one request prefills per step; on CPU a budget of work, so fewer as its context "
        "grows (default: 128 on CPU, no cap on CUDA; 0: no cap)",
    ),
    ("--gpu-memory-utilization", "gpu_memory_utilization", float, "GPU memory fraction (default: 0.9)"),
    (
        "--kv-cache-memory-bytes",
        "kv_cache_memory",
        parse_bytes,
        "KV cache size, e.g. 512MiB or 2GB (default: on CPU max-num-seqs x max-model-len tokens; on CUDA "
        "what --gpu-memory-utilization leaves)",
    ),
    ("--cpu-kv-cache-gb", "cpu_kv_cache_gb", float, "KV cache size on CPU in GiB (overrides the default)"),
    ("--num-gpu-blocks-override", "num_kv_blocks", int, "KV cache blocks, overriding the sizing"),
    ("--block-size", "block_size", int, "tokens per KV cache block (default: 16)"),
    ("--load-format", "load_format", str, "auto, safetensors, pt or dummy (default: auto)"),
    ("--seed", "seed", int, "engine seed (default: 0)"),
    ("--max-loras", "max_loras", int, "adapters in GPU slots at once (default: 4)"),
    ("--max-lora-rank", "max_lora_rank", int, "largest adapter rank accepted (default: 16)"),
    ("--max-cpu-loras", "max_cpu_loras", int, "adapters in the CPU cache (default: max-loras)"),
    ("--lora-dtype", "lora_dtype", str, "adapter weight dtype (default: auto = the model's)"),
)
ENGINE_SWITCHES = (
    ("--enable-lora", "enable_lora", "serve LoRA adapters"),
    ("--enforce-eager", "enforce_eager", "never capture CUDA graphs"),
    (
        "--batch-invariant",
        "batch_invariant",
        "a request's output does not depend on the rest of its batch (slower; default: "
        "$LORAPLANE_BATCH_INVARIANT)",
    ),
)


ENGINE_TOGGLES = (
    (
        "--enable-prefix-caching",
        "enable_prefix_caching",
        "reuse KV blocks of shared prompt prefixes (default: on)",
    ),
    (
        "--async-scheduling",
        "async_scheduling",
        "queue a decode step on the GPU before the previous one's tokens are read (default: on with CUDA)",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    service = parser.add_argument_group("service")
    service.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to serve on (default: {DEFAULT_LISTEN}, loopback only; pass 0.0.0.0:PORT to serve "
        "other hosts, e.g. a gateway elsewhere)",
    )
    service.add_argument(
        "--control-plane",
        default=None,
        help="control plane HOST:PORT (default: $LORAPLANE_CONTROL_PLANE; unset = standalone); "
        "$LORAPLANE_WORKER_TOKEN, when set, is sent as its bearer token",
    )
    service.add_argument(
        "--worker-id", default=None, help="worker id (default: $LORAPLANE_WORKER_ID or host:port:pid)"
    )
    service.add_argument(
        "--advertise-endpoint", default=None, help="HOST:PORT others use to reach this worker"
    )
    service.add_argument(
        "--max-queue-len",
        type=int,
        default=None,
        help=f"sequences admitted beyond max-num-seqs before RESOURCE_EXHAUSTED; a Generate call counts "
        f"its n (default: {QUEUE_LEN_PER_SEQ} x max-num-seqs)",
    )
    service.add_argument(
        "--max-receive-bytes",
        type=int,
        default=MAX_MESSAGE_BYTES,
        help="largest gRPC request accepted; a larger one gets RESOURCE_EXHAUSTED, which the gateway "
        f"answers with 413 (default: {MAX_MESSAGE_BYTES}, 16 MiB)",
    )
    service.add_argument(
        "--shutdown-grace-s", type=float, default=30.0, help="seconds in-flight streams get on SIGTERM"
    )
    service.add_argument(
        "--lora-modules",
        nargs="+",
        default=None,
        help='static adapters: name=path or JSON {"name", "path", "base_model_name"} (needs --enable-lora)',
    )
    add_metrics_port_argument(service)
    service.add_argument(
        "--max-adapter-labels",
        type=int,
        default=64,
        help="adapters with their own label in per-adapter metrics; the rest share __other__ (default: 64)",
    )
    add_tls_arguments(service, "its gRPC server and its control-plane stream (client certificate)")
    engine = parser.add_argument_group("engine (vLLM names)")
    for flag, dest, kind, text in ENGINE_OPTIONS:
        engine.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    for flag, dest, text in ENGINE_SWITCHES:
        engine.add_argument(flag, dest=dest, action="store_true", help=text)
    for flag, dest, text in ENGINE_TOGGLES:
        engine.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)


def engine_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options given on the command line, by their EngineConfig names."""
    kwargs = {
        dest: getattr(args, dest) for _, dest, _, _ in ENGINE_OPTIONS if getattr(args, dest) is not None
    }
    kwargs.update({dest: True for _, dest, _ in ENGINE_SWITCHES if getattr(args, dest)})
    kwargs.update(
        {dest: getattr(args, dest) for _, dest, _ in ENGINE_TOGGLES if getattr(args, dest) is not None}
    )
    return kwargs


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The engine's validated config from the engine flags; a bad value raises ValueError naming its flag."""
    try:
        return EngineConfig.from_kwargs(**engine_kwargs_from_args(args))
    except ValueError as exc:
        option = str(exc).split(" ", 1)[0]
        flag = next((flag for flag, dest in _engine_flags() if dest == option), None)
        raise ValueError(f"{flag}: {exc}" if flag else str(exc)) from exc


def _engine_flags() -> list[tuple[str, str]]:
    """(flag, EngineConfig field) for every engine flag."""
    return [(flag, dest) for flag, dest, *_ in (*ENGINE_OPTIONS, *ENGINE_SWITCHES, *ENGINE_TOGGLES)]


def config_from_args(args: argparse.Namespace) -> WorkerServiceConfig:
    """Build the frozen service config (the engine's included); ValueError naming the flag on bad values."""
    engine = engine_config_from_args(args)
    _, port = split_host_port(args.listen)
    # host, port and pid: two workers on one host never share an id, nor a restarted one with a stale stream
    worker_id = args.worker_id or env_worker_id() or f"{socket.gethostname()}:{port}:{os.getpid()}"
    max_queue_len = (
        args.max_queue_len if args.max_queue_len is not None else QUEUE_LEN_PER_SEQ * engine.max_num_seqs
    )
    return WorkerServiceConfig(
        listen=args.listen,
        control_plane=args.control_plane or env_control_plane(),
        worker_id=worker_id,
        advertise_endpoint=args.advertise_endpoint,
        max_queue_len=max_queue_len,
        shutdown_grace_s=args.shutdown_grace_s,
        max_receive_bytes=args.max_receive_bytes,
        lora_modules=parse_lora_modules(args.lora_modules),
        worker_token=env_worker_token(),
        metrics_port=args.metrics_port,
        max_adapter_labels=args.max_adapter_labels,
        tls=tls_from_args(args),
        engine=engine,
    )


def _announce(worker: Any) -> None:
    print(f"loraplane worker {worker.config.worker_id} serving on {worker.endpoint}", flush=True)
    if worker.metrics_server is not None:  # after the ready line, which launchers read first
        print(f"loraplane worker metrics on http://{worker.metrics_server.address}/metrics", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"loraplane worker: {exc}", file=sys.stderr)
        return 2
    from loraplane.ports import PortInUseError, check_ports

    host, port = split_host_port(config.listen)
    try:  # before the model loads: a taken port fails in a second, not after minutes
        check_ports([(host, port, "--listen"), (host, config.metrics_port, "--metrics-port")])
    except PortInUseError as exc:
        print(f"loraplane worker: {exc}", file=sys.stderr)
        return 1
    from loraplane.inference_worker.errors import DOMAIN_ERRORS
    from loraplane.inference_worker.service.server import serve

    try:
        return asyncio.run(serve(config, on_ready=_announce))
    except (*DOMAIN_ERRORS, RuntimeError) as exc:
        logger.error("worker failed to start: %s", exc)
        return 1
