"""The `loraplane` command: every subcommand is listed and reachable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loraplane.cli import SUBCOMMANDS, build_parser


def test_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "loraplane", "--help"], capture_output=True, text=True, check=True
    )
    for sub in SUBCOMMANDS:
        assert sub.name in result.stdout


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: s.name)
def test_every_subcommand_is_built(sub):
    args = build_parser(sub.name).parse_args([sub.name, *_minimal_args(sub)])
    assert args._module is not None, f"`loraplane {sub.name}` has no implementation module {sub.module}"
    assert callable(args._module.run)


def _minimal_args(sub) -> list[str]:
    return {"adapters": ["list"], "workers": ["list"]}.get(sub.name, [])


def test_unknown_subcommand_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "loraplane", "nope"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
