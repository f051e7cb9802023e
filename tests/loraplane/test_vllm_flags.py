"""`loraplane serve`/`up` take vllm serve's flags: aliases, the API key through the environment."""

from __future__ import annotations

import argparse
import os

import pytest

from loraplane import serve, up
from loraplane.vllm_flags import apply_vllm_flags


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
    monkeypatch.delenv("LORAPLANE_API_KEY", raising=False)
    monkeypatch.setenv("VLLM_API_KEY", "from-vllm")
    apply_vllm_flags(_parse(module, []))
    assert os.environ["LORAPLANE_API_KEY"] == "from-vllm"
    (tmp_path / "key").write_text("from-file\n")
    apply_vllm_flags(_parse(module, ["--api-key-file", str(tmp_path / "key")]))
    assert os.environ["LORAPLANE_API_KEY"] == "from-file"
