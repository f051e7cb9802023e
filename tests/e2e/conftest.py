"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from loraplane.inference_worker.demo import demo_model_path

    return Path(demo_model_path())
