"""--log-format, the request context of log lines, the logging and tracing flags, and how the `loraplane`
command hands them to the processes it starts (a real `loraplane gateway` child in front of a fake
worker, logging JSON lines with the request's id)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import httpx
import pytest

from loraplane import cli, observability
from loraplane.gateway.testing import start_fake_worker
from loraplane.observability import JsonFormatter, ObservabilityConfig, request_context
from loraplane.supervisor import free_port


def _record(message: str = "hello %s", args=("world",), exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("loraplane.x", logging.WARNING, __file__, 1, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_json_lines_have_the_fields_and_the_request_context_only_inside_it():
    with request_context(request_id="r-1", adapter="sql-lora", worker="w-0"):
        inside = json.loads(JsonFormatter().format(_record(fields={"output_tokens": 3})))
    outside = json.loads(JsonFormatter().format(_record()))
    assert (
        inside["message"] == "hello world"
        and inside["level"] == "WARNING"
        and inside["logger"] == "loraplane.x"
    )
    assert inside["timestamp"].endswith("+00:00") and "T" in inside["timestamp"]
    assert (inside["request_id"], inside["adapter"], inside["worker"]) == ("r-1", "sql-lora", "w-0")
    assert inside["output_tokens"] == 3
    assert not {"request_id", "adapter", "worker", "output_tokens"} & outside.keys()


def test_json_lines_carry_the_traceback_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonFormatter().format(_record(exc_info=sys.exc_info()))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:4317", "https://otel.example.com/v1/traces", "collector:4317"]
)
def test_endpoints_that_are_accepted(endpoint):
    assert ObservabilityConfig(otlp_traces_endpoint=endpoint).tracing


@pytest.mark.parametrize("endpoint", ["", "has space:4317", "http://host:port"])
def test_a_bad_endpoint_names_the_flag(endpoint):
    with pytest.raises(ValueError, match="--otlp-traces-endpoint"):
        ObservabilityConfig(otlp_traces_endpoint=endpoint)


@pytest.mark.parametrize("command", ["serve", "up", "worker", "gateway"])
def test_serving_commands_take_the_request_log_and_tracing_flags(command):
    argv = ["--log-format", "json", command, "--disable-log-requests", "--otlp-traces-endpoint", "h:4317"]
    args = cli.build_parser(command).parse_args(argv)
    config = observability.config_from_args(args)
    assert args.log_format == "json" and config == ObservabilityConfig(False, "h:4317")


def test_bad_log_format_and_flags_of_other_commands_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser("worker").parse_args(["--log-format", "xml", "worker"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser("control-plane").parse_args(["control-plane", "--disable-log-requests"])


def test_the_options_reach_child_processes_through_the_environment(monkeypatch):
    for name in (observability.ENV_DISABLE_LOG_REQUESTS, observability.ENV_OTLP_TRACES_ENDPOINT):
        monkeypatch.setenv(name, "")  # set (even empty), so that the test's exports are undone after it
    monkeypatch.setenv(observability.ENV_LOG_LEVEL, "INFO")
    monkeypatch.setenv(observability.ENV_LOG_FORMAT, "json")
    args = cli.build_parser("serve").parse_args(["serve", "--disable-log-requests"])
    assert args.log_format == "json"  # the parent's choice is the child's default
    observability.export_to_children(args, observability.config_from_args(args))
    assert os.environ[observability.ENV_DISABLE_LOG_REQUESTS] == "1"
    assert observability.config_from_env() == ObservabilityConfig(log_requests=False)
    child_args = cli.build_parser("worker").parse_args(["worker"])
    assert child_args.disable_log_requests and child_args.log_format == "json"


async def test_a_gateway_process_logs_json_lines_with_the_request_id():
    server, _, worker_port = await start_fake_worker(adapters={"sql-lora"})
    port = free_port()
    env = {**os.environ, observability.ENV_LOG_FORMAT: "text", observability.ENV_DISABLE_LOG_REQUESTS: ""}
    argv = [sys.executable, "-P", "-m", "loraplane", "--log-format", "json", "gateway"]
    argv += ["--port", str(port), "--worker", f"127.0.0.1:{worker_port}"]
    child = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and child.poll() is None, "the gateway did not start"
                await asyncio.sleep(0.1)
            body = {"model": "sql-lora", "prompt": "a b c", "max_tokens": 2}
            response = await client.post("/v1/completions", json=body, headers={"X-Request-Id": "child-1"})
        assert response.status_code == 200 and response.headers["x-request-id"] == "child-1"
    finally:
        child.terminate()
        _, stderr = child.communicate(timeout=30)
        await server.stop(0)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([line for line in stderr.splitlines() if line.strip()]), stderr
    finished = [line for line in lines if line["message"].startswith("finished request child-1")]
    assert len(finished) == 1 and finished[0]["request_id"] == "child-1", stderr
    assert finished[0]["adapter"] == "sql-lora" and finished[0]["output_tokens"] == 2
