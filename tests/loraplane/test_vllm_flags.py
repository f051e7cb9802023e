"""`loraplane serve`/`up` take vllm serve's flags (each in the committed `vllm serve --help` list is taken or
refused by name), `--model` as an alias, engine flags forwarded to the workers, the API key by environment."""

from __future__ import annotations

import argparse
import os

import pytest

from loraplane import serve, topology, up
from loraplane.cli import build_parser
from loraplane.vllm_flags import ALIASES, apply_vllm_flags
from loraplane.vllm_flags_list import VLLM_SERVE_FLAGS


@pytest.fixture(autouse=True)
def _restore_exports():
    """apply_vllm_flags exports the key and uvicorn's level for the gateway child: keep them out of later
    tests."""
    names = ("LORAPLANE_API_KEY", "LORAPLANE_UVICORN_LOG_LEVEL")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("module", [serve, up])
def test_model_is_an_alias_of_the_positional(module):
    args = _parse(module, ["--model", "some/model"])
    apply_vllm_flags(args)
    assert args.model == "some/model"
    args = _parse(module, ["other/model", "--model", "some/model"])
    with pytest.raises(ValueError, match="--model some/model and the positional model other/model"):
        apply_vllm_flags(args)


@pytest.mark.parametrize("module", [serve, up])
def test_the_api_key_reaches_the_gateway_through_the_environment(module, monkeypatch, tmp_path):
    os.environ.pop("LORAPLANE_API_KEY", None)
    monkeypatch.setenv("VLLM_API_KEY", "from-vllm")
    apply_vllm_flags(_parse(module, []))
    assert os.environ["LORAPLANE_API_KEY"] == "from-vllm"
    (tmp_path / "key").write_text("from-file\n")
    apply_vllm_flags(_parse(module, ["--api-key-file", str(tmp_path / "key")]))
    assert os.environ["LORAPLANE_API_KEY"] == "from-file"


SAMPLES = {"--lora-modules": "sql=/adapters/sql", "--uvicorn-log-level": "debug"}


def _walk_value(parser: argparse.ArgumentParser, command: str, flag: str) -> list[str]:
    """`flag`, with a value when it takes one: SAMPLES[flag], else "2" (an int, a float or a string)."""
    action = parser._subparsers._group_actions[0].choices[command]._option_string_actions[flag]
    return [flag] if action.nargs == 0 else [flag, SAMPLES.get(flag, "2")]


@pytest.mark.parametrize("command", ["serve", "up"])
@pytest.mark.parametrize("flag", VLLM_SERVE_FLAGS)
def test_every_vllm_serve_flag_is_taken_or_refused_by_name(command, flag, capsys):
    """Parsing never ends in argparse's usage dump; a refusal is a ValueError naming the flag."""
    parser = build_parser(command)
    argv = [command, "some/model", *_walk_value(parser, command, flag)]
    args = parser.parse_args(argv)
    try:
        apply_vllm_flags(args)
    except ValueError as exc:
        long = ALIASES.get(flag, flag)
        assert str(exc).startswith(long), exc  # named first
        assert len(str(exc)) > len(long) + 20  # with a reason
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-tp", "2"], "--tensor-parallel-size 2: tensor, pipeline"),
        (["--pipeline-parallel-size", "4"], "--pipeline-parallel-size 4: tensor, pipeline"),
        (["--quantization", "awq"], "--quantization awq: quantized weights are not built"),
        (["--enable-auto-tool-choice"], "--enable-auto-tool-choice is not taken: tool calling"),
        (
            ["--ssl-certfile", "c.pem"],
            "--ssl-certfile c.pem is not taken: HTTPS for serve and up takes --tls-cert",
        ),
        (["--log-config-file", "x.json"], "--log-config-file x.json is not taken: set the log level"),
    ],
)
def test_flags_that_cannot_apply_say_why(argv, message):
    args = build_parser("serve").parse_args(["serve", *argv])
    with pytest.raises(ValueError) as caught:
        apply_vllm_flags(args)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("command", ["serve", "up"])
def test_engine_flags_reach_every_worker(command):
    argv = [command, "m", "-tp", "1", "--quantization", "None", "--trust-remote-code", "--enforce-eager"]
    argv += [
        "--gpu-memory-utilization",
        "0.5",
        "--max-num-batched-tokens",
        "256",
        "--no-enable-prefix-caching",
    ]
    argv += ["--lora-dtype", "float16", "--seed", "7", "--generation-config", "vllm", "--tokenizer", "tok"]
    args = build_parser(command).parse_args(argv)
    apply_vllm_flags(args)
    forwarded = topology.worker_args(args)
    for pair in (["--gpu-memory-utilization", "0.5"], ["--max-num-batched-tokens", "256"], ["--seed", "7"]):
        assert forwarded[forwarded.index(pair[0]) + 1] == pair[1]
    for flag in ("--enforce-eager", "--no-enable-prefix-caching", "--lora-dtype", "--tokenizer"):
        assert flag in forwarded
    assert "--tensor-parallel-size" not in forwarded and "--trust-remote-code" not in forwarded


def test_every_worker_engine_flag_is_taken_by_serve():
    from loraplane.inference_worker.service.cli import ENGINE_OPTIONS, ENGINE_SWITCHES, ENGINE_TOGGLES

    parser = build_parser("serve")
    serve_flags = parser._subparsers._group_actions[0].choices["serve"]._option_string_actions
    for flag, *_ in (*ENGINE_OPTIONS, *ENGINE_SWITCHES, *ENGINE_TOGGLES):
        assert flag in serve_flags, flag


def test_uvicorn_log_level_reaches_the_gateway_config():
    from loraplane.gateway.config import GatewayConfig

    apply_vllm_flags(build_parser("serve").parse_args(["serve", "--uvicorn-log-level", "debug"]))
    assert GatewayConfig.from_env(workers=("127.0.0.1:1",)).uvicorn_log_level == "debug"
    with pytest.raises(ValueError, match="uvicorn_log_level must be one of"):
        GatewayConfig(workers=("127.0.0.1:1",), uvicorn_log_level="loud")
