"""Shared test fixtures: the demo model, converted once per machine and located once per test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The repository root holds the bare component folders (`kernels/`, `gateway/`, ...), which are
# installed as `loraplane.*`; ahead of site-packages on `sys.path` they would shadow other
# distributions' packages of those names (transformers imports Hugging Face's `kernels`).
# `python -m pytest` puts the working directory first: move it last (the tests import `tests.*` from
# there), and keep it off the path of every Python child process the tests start.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT] + [str(_ROOT)]
os.environ["PYTHONSAFEPATH"] = "1"


def pytest_configure(config) -> None:
    """One torch thread by default: on a small shared CPU, OpenMP threads spinning against other
    processes make every op many times slower (LORAPLANE_TEST_THREADS overrides)."""
    import torch

    torch.set_num_threads(int(os.environ.get("LORAPLANE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def demo_model_path() -> str:
    """Directory of the converted SmolLM2-135M-Instruct demo model (safetensors, fp32)."""
    from loraplane.inference_worker.demo import demo_model_path as locate

    return locate()
