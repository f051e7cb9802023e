"""The fuzz suite's one fleet (control plane, worker on a tiny random Llama, gateway), per session."""

from __future__ import annotations

import pytest

from tests.fuzz.fleet import FuzzFleet, start_fleet


@pytest.fixture(scope="session")
def fuzz_fleet(tmp_path_factory, demo_model_path) -> FuzzFleet:
    fleet, stop = start_fleet(tmp_path_factory.mktemp("fuzz"), demo_model_path)
    try:
        yield fleet
    finally:
        stop()
