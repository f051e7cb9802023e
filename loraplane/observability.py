"""Logs an operator can use: `--log-format text|json`, per-request context, and the request-log flags.

Semantics:
- `configure_logging(level, fmt)` sets up the root logger for every `loraplane` command. `text` is one
  human line per record; `json` is one JSON object per line with `timestamp` (UTC, ISO 8601, ms),
  `level`, `logger`, `message`, the request context when known (`request_id`, `adapter`, `worker`), the
  record's structured `fields` (request lines: tokens, timings, finish reason) and `exception` (the
  formatted traceback) when there is one.
- The request context lives in context variables, set per request with `request_context(...)` (the
  gateway's middleware and the worker's interceptor do it), so every line logged while a request is
  handled carries it, from any module, with no logger passed around.
- `--disable-log-requests` (vLLM's flag) turns off the per-request INFO lines ("received", "finished");
  `--otlp-traces-endpoint` (vLLM's flag) turns on OpenTelemetry tracing (loraplane.tracing). Both
  default from the environment, and `export_to_children` writes the values given on the command line
  back to it, so `serve` and `up` hand them, with `--log-level` and `--log-format`, to every process
  they start. This is the only module that reads these environment variables.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ENV_LOG_LEVEL = "LORAPLANE_LOG_LEVEL"
ENV_LOG_FORMAT = "LORAPLANE_LOG_FORMAT"
ENV_DISABLE_LOG_REQUESTS = "LORAPLANE_DISABLE_LOG_REQUESTS"
ENV_OTLP_TRACES_ENDPOINT = "LORAPLANE_OTLP_TRACES_ENDPOINT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("request_id", "adapter", "worker")
_ENDPOINT = re.compile(r"^(https?://)?[^\s/:]+(:\d{1,5})?(/\S*)?$")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"loraplane_log_{name}", default=None) for name in CONTEXT_FIELDS
}


@contextlib.contextmanager
def request_context(**fields: str | None) -> Iterator[None]:
    """Tag every record logged inside the block with `fields` (a subset of CONTEXT_FIELDS)."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_context(**fields: str | None) -> None:
    """Set context fields for the rest of the current task (a request learns its worker late)."""
    for name, value in fields.items():
        _context[name].set(value)


def current_context() -> dict[str, str]:
    """The request context fields that are set."""
    return {name: value for name, var in _context.items() if (value := var.get())}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_context())
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")


def configure_logging(level: str, fmt: str) -> None:
    """Root logger at `level` writing `fmt` lines to stderr; replaces handlers set up before."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """`--log-level` and `--log-format`, for the top-level `loraplane` parser."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get(ENV_LOG_LEVEL, "INFO"),
        help=f"logging level (default: ${ENV_LOG_LEVEL} or INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get(ENV_LOG_FORMAT, "text"),
        help="text: one line per record; json: one JSON object per line with timestamp, level, logger, "
        f"message, request_id, adapter and worker (default: ${ENV_LOG_FORMAT} or text)",
    )


@dataclass(frozen=True)
class ObservabilityConfig:
    """Request logs and tracing of one process.

    Semantics: `log_requests` logs a "received" and a "finished" INFO line per request; with
    `otlp_traces_endpoint` set, every request gets a span exported over OTLP to that endpoint
    (loraplane.tracing); unset, no tracing code runs.
    """

    log_requests: bool = True
    otlp_traces_endpoint: str | None = None

    def __post_init__(self) -> None:
        endpoint = self.otlp_traces_endpoint
        if endpoint is not None and not _ENDPOINT.match(endpoint):
            raise ValueError(
                "--otlp-traces-endpoint must be a URL or HOST:PORT, e.g. http://127.0.0.1:4317, "
                f"got {endpoint!r}"
            )

    @property
    def tracing(self) -> bool:
        return bool(self.otlp_traces_endpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """vLLM's `--disable-log-requests` and `--otlp-traces-endpoint` (worker, gateway, serve and up)."""
    group = parser.add_argument_group("logs and traces (vLLM names)")
    group.add_argument(
        "--disable-log-requests",
        action="store_true",
        default=_env_flag(ENV_DISABLE_LOG_REQUESTS),
        help=f"do not log a line when each request arrives and ends (default: ${ENV_DISABLE_LOG_REQUESTS})",
    )
    group.add_argument(
        "--otlp-traces-endpoint",
        default=os.environ.get(ENV_OTLP_TRACES_ENDPOINT) or None,
        help="send a trace span per request to this OpenTelemetry collector (OTLP over gRPC, e.g. "
        "http://127.0.0.1:4317; OTLP over HTTP when OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf); "
        "needs the [otel] extra (default: off)",
    )


def config_from_args(args: argparse.Namespace) -> ObservabilityConfig:
    """The config from `add_arguments`' flags; ValueError naming the flag on a bad value."""
    return ObservabilityConfig(
        log_requests=not getattr(args, "disable_log_requests", False),
        otlp_traces_endpoint=getattr(args, "otlp_traces_endpoint", None),
    )


def config_from_env() -> ObservabilityConfig:
    """This process's config, as the `loraplane` command exported it (`export_to_children`); servers
    built without an explicit config use it."""
    return ObservabilityConfig(
        log_requests=not _env_flag(ENV_DISABLE_LOG_REQUESTS),
        otlp_traces_endpoint=os.environ.get(ENV_OTLP_TRACES_ENDPOINT) or None,
    )


def export_to_children(args: argparse.Namespace, config: ObservabilityConfig) -> None:
    """Write the logging options in `args` and `config` to the environment: this process's servers
    (`config_from_env`) and the processes `serve` and `up` start read them from there."""
    os.environ[ENV_LOG_LEVEL] = args.log_level
    os.environ[ENV_LOG_FORMAT] = args.log_format
    os.environ[ENV_DISABLE_LOG_REQUESTS] = "0" if config.log_requests else "1"
    if config.otlp_traces_endpoint:
        os.environ[ENV_OTLP_TRACES_ENDPOINT] = config.otlp_traces_endpoint
    else:
        os.environ.pop(ENV_OTLP_TRACES_ENDPOINT, None)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
