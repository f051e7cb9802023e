"""Shared test fixtures: the demo model, converted once per machine and located once per test run."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config) -> None:
    """One torch thread by default: on a small shared CPU, OpenMP threads spinning against other
    processes make every op many times slower (LORAPLANE_TEST_THREADS overrides)."""
    import torch

    torch.set_num_threads(int(os.environ.get("LORAPLANE_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def demo_model_path() -> str:
    """Directory of the converted SmolLM2-135M-Instruct demo model (safetensors, fp32)."""
    from inference_worker.demo import demo_model_path as locate

    return locate()
