"""`loraplane worker` flags -> the frozen service config with the engine's (no model, no torch); a bad
value, the engine's included, exits 2 naming the flag before anything is bound or loaded."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.service import cli
from loraplane.inference_worker.service.config import LoRAModulePath, WorkerServiceConfig, parse_lora_modules


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["sql=/a/b"], [LoRAModulePath("sql", "/a/b")]),
        (
            ['{"name": "sql", "path": "/a", "base_model_name": "base"}', "x=/y"],
            [LoRAModulePath("sql", "/a", "base"), LoRAModulePath("x", "/y")],
        ),
        (['{"name": "j", "path": "/p=q"}'], [LoRAModulePath("j", "/p=q")]),
        ([""], []),
        (None, []),
    ],
)
def test_lora_modules_in_both_vllm_formats(items, expected):
    assert list(parse_lora_modules(items)) == expected


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("{not json", "Invalid JSON format"),
        ("invalid_format", "Invalid JSON format"),
        ('{"name": "only-name"}', "Invalid fields"),
        ('{"name": "a", "path": "/p", "colour": "red"}', "Invalid fields"),
        ("=path", "Invalid fields"),
    ],
)
def test_bad_lora_modules_are_rejected_with_vllm_messages(item, words):
    with pytest.raises(ValueError, match=words):
        parse_lora_modules([item])


def test_duplicate_lora_module_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        parse_lora_modules(["a=/x", "a=/y"])


def test_only_given_engine_flags_reach_the_engine():
    args = parse(
        "--model",
        "/m",
        "--enable-lora",
        "--max-loras",
        "3",
        "--no-enable-prefix-caching",
        "--dtype",
        "bf16",
        "--no-async-scheduling",
    )
    assert cli.engine_kwargs_from_args(args) == {
        "model": "/m",
        "enable_lora": True,
        "max_loras": 3,
        "enable_prefix_caching": False,
        "async_scheduling": False,
        "dtype": "bf16",
    }
    assert cli.engine_kwargs_from_args(parse()) == {}


def test_standalone_worker_listens_on_loopback_by_default():
    assert cli.config_from_args(parse()).listen.startswith("127.0.0.1:")
    assert WorkerServiceConfig().listen.startswith("127.0.0.1:")


def test_config_defaults_and_environment(monkeypatch):
    monkeypatch.setenv("LORAPLANE_CONTROL_PLANE", "cp.local:50051")
    monkeypatch.setenv("LORAPLANE_WORKER_ID", "gpu-7")
    config = cli.config_from_args(parse("--max-num-seqs", "8", "--listen", "0.0.0.0:50061"))
    assert (config.control_plane, config.worker_id) == ("cp.local:50051", "gpu-7")
    assert (config.engine.max_num_seqs, config.max_queue_len, config.max_in_flight) == (8, 32, 40)
    assert config.engine == EngineConfig(max_num_seqs=8)
    monkeypatch.delenv("LORAPLANE_CONTROL_PLANE")
    standalone = cli.config_from_args(parse("--control-plane", "10.0.0.1:1", "--max-queue-len", "0"))
    assert standalone.control_plane == "10.0.0.1:1" and standalone.max_queue_len == 0


def test_worker_token_comes_from_the_environment_and_stays_out_of_repr(monkeypatch):
    monkeypatch.setenv("LORAPLANE_WORKER_TOKEN", "s3cret")
    config = cli.config_from_args(parse("--control-plane", "127.0.0.1:1"))
    assert config.worker_token == "s3cret" and "s3cret" not in repr(config)


def test_static_lora_modules_need_enable_lora():
    item = json.dumps({"name": "a", "path": "/p"})
    with pytest.raises(ValueError, match="--enable-lora"):
        cli.config_from_args(parse("--lora-modules", item))
    config = cli.config_from_args(parse("--enable-lora", "--lora-modules", item, "b=/q"))
    assert [m.name for m in config.lora_modules] == ["a", "b"]


@pytest.mark.parametrize(
    "overrides",
    [dict(listen="nohost"), dict(control_plane="x:y"), dict(max_queue_len=-1), dict(shutdown_grace_s=-1)],
)
def test_config_validation(overrides):
    with pytest.raises(ValueError):
        WorkerServiceConfig(**overrides)


def test_advertised_endpoint():
    assert WorkerServiceConfig(listen="127.0.0.1:0").endpoint_for(4242) == "127.0.0.1:4242"
    assert WorkerServiceConfig(listen="[::1]:0").endpoint_for(5) == "[::1]:5"
    assert WorkerServiceConfig(advertise_endpoint="w.example:1").endpoint_for(9) == "w.example:1"
    assert not WorkerServiceConfig(listen="0.0.0.0:1").endpoint_for(1).startswith("0.0.0.0")


def test_bad_flags_exit_2_and_importing_the_subcommand_stays_light(capsys):
    assert cli.run(parse("--listen", "no-port")) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    code = "import sys, loraplane.inference_worker.service.cli; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--enable-lora", "--max-loras", "0"], "--max-loras: max_loras must be an int >= 1, got 0"),
        (["--dtype", "int3"], "--dtype: dtype must be auto or one of"),
        (["--load-format", "gguf2"], "--load-format: load_format must be one of"),
        (["--device", "tpu"], "--device: device must be auto, cpu, cuda or cuda:N"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization: gpu_memory_utilization must be in"),
    ],
)
def test_bad_engine_values_are_rejected_while_parsing(flags, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        cli.config_from_args(parse(*flags))


def test_a_bad_engine_value_exits_2_before_the_server_or_the_engine_is_imported():
    code = (
        "import sys; from loraplane.cli import main; code = main(sys.argv[1:]); "
        "late = {'torch', 'loraplane.inference_worker.service.server'} & set(sys.modules); "
        "sys.exit(code if not late else 99)"
    )
    flags = ["worker", "--listen", "127.0.0.1:0", "--enable-lora", "--max-loras", "0"]
    result = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "loraplane worker: --max-loras: max_loras must be an int >= 1, got 0" in result.stderr
    assert "listening" not in result.stderr
