"""Fixtures: PEFT adapters written by peft itself for a tiny random Llama (shared with the worker's tests)."""

from __future__ import annotations

from tests.inference_worker.lora.conftest import make_adapter, tiny_llama  # noqa: F401
