"""The committed text-to-SQL demo adapter turns held-out prompts into SQL through the engine; the base
model does not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from loraplane.adapter_format import validate_adapter_dir
from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.lora import LoRARequest
from tests.inference_worker.conftest import make_llm

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = ROOT / "examples" / "adapters" / "sql-lora"
NUM_EXAMPLES = 12


def load_script():
    spec = importlib.util.spec_from_file_location(
        "train_demo_adapter", ROOT / "scripts" / "train_demo_adapter.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_demo_adapter_is_committed_small_and_valid():
    config, version = validate_adapter_dir(ADAPTER, max_lora_rank=16)
    assert config.r <= 16 and len(version) == 64
    assert sum(f.stat().st_size for f in ADAPTER.iterdir()) < 8 * 2**20


def test_held_out_tables_are_never_trained_on():
    script = load_script()
    trained = {ex.prompt.split("CREATE TABLE ")[1].split(" ")[0] for ex in script.make_dataset(500, False, 0)}
    held_out = {ex.prompt.split("CREATE TABLE ")[1].split(" ")[0] for ex in script.make_dataset(50, True, 1)}
    assert held_out == set(script.HELD_OUT_TABLES) and not trained & held_out


def test_adapter_writes_sql_for_held_out_schemas_and_base_does_not(demo_model_path):
    examples = load_script().make_dataset(NUM_EXAMPLES, held_out=True, seed=1234)
    llm = make_llm(demo_model_path, enable_lora=True, max_loras=1, max_lora_rank=16, max_model_len=256)
    sql = LoRARequest("sql-lora", 1, str(ADAPTER))
    prompts = [ex.prompt for ex in examples]
    outputs = llm.generate(
        prompts * 2,
        SamplingParams(temperature=0.0, max_tokens=40),
        [sql] * len(prompts) + [None] * len(prompts),
    )
    adapter_texts = [o.outputs[0].text.strip() for o in outputs[: len(prompts)]]
    base_texts = [o.outputs[0].text.strip() for o in outputs[len(prompts) :]]
    adapter_exact = sum(text == ex.sql for text, ex in zip(adapter_texts, examples, strict=True))
    base_exact = sum(text == ex.sql for text, ex in zip(base_texts, examples, strict=True))
    adapter_sql = sum(_is_sql_for(text, ex) for text, ex in zip(adapter_texts, examples, strict=True))
    base_sql = sum(_is_sql_for(text, ex) for text, ex in zip(base_texts, examples, strict=True))
    assert adapter_sql >= 0.9 * NUM_EXAMPLES and adapter_exact >= 0.5 * NUM_EXAMPLES, adapter_texts
    assert base_sql <= 0.25 * NUM_EXAMPLES and base_exact == 0, base_texts


def _is_sql_for(text: str, example) -> bool:
    """A single SELECT statement over the example's table (the answer's shape, not exact match)."""
    table = example.sql.split(" FROM ")[1].split(" ")[0]
    return text.startswith("SELECT ") and f" FROM {table}" in text and "\n" not in text
