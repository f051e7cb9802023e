"""The offline Python API (vLLM's `LLM`, `SamplingParams`, `LoRARequest`): the demo model with and
without the demo text-to-SQL adapter, no server.

python examples/offline_generate.py [--adapter examples/adapters/sql-lora] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.lora import LoRARequest

ADAPTER = Path(__file__).resolve().parent / "adapters" / "sql-lora"
# The prompt format the demo adapter was trained on (scripts/train_demo_adapter.py, `make_prompt`).
PROMPT = (
    "[user] Write a SQL query to answer the question based on the table schema.\n\n"
    " context: CREATE TABLE head (age INTEGER)\n\n"
    " question: How many heads of the departments are older than 56 ? [/user] [assistant]"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=str(ADAPTER), help="a PEFT LoRA adapter directory")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    llm = LLM(enable_lora=True, max_loras=4, max_lora_rank=16)  # the demo model by default
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    sql = LoRARequest("sql-lora", 1, args.adapter)
    for name, lora_request in (("base model", None), ("sql-lora", sql)):
        output = llm.generate([PROMPT], params, lora_request=lora_request)[0]
        print(f"{name}: {output.outputs[0].text!r}")


if __name__ == "__main__":
    main()
