"""Shared test fixtures: the demo model, converted once per machine and located once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_model_path() -> str:
    """Directory of the converted SmolLM2-135M-Instruct demo model (safetensors, fp32)."""
    from inference_worker.demo import demo_model_path as locate

    return locate()
