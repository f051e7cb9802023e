"""Train the demo text-to-SQL LoRA for SmolLM2-135M-Instruct on this CPU in a few minutes.

The data set is generated here (templated CREATE TABLE schemas, questions and SQL answers; nothing is
downloaded). Train and held-out sets use disjoint tables, so evaluation measures generalisation to new
schemas. The adapter is saved with peft (adapter_config.json + adapter_model.safetensors).

    python scripts/train_demo_adapter.py                      # train, save to examples/adapters/sql-lora
    python scripts/train_demo_adapter.py --eval-only          # greedy exact match, base vs adapter
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("train_demo_adapter")

INSTRUCTION = "Write a SQL query to answer the question based on the table schema."
HUB_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "examples" / "adapters" / "sql-lora"

# table -> (entity noun, [(column, type, sample values)])
TABLES = {
    "employees": (
        "employee",
        [
            ("name", "VARCHAR", ["Alice", "Bob", "Chen"]),
            ("department", "VARCHAR", ["Sales", "IT"]),
            ("salary", "INTEGER", [50000, 72000]),
            ("age", "INTEGER", [30, 45]),
        ],
    ),
    "products": (
        "product",
        [
            ("title", "VARCHAR", ["Lamp", "Desk"]),
            ("category", "VARCHAR", ["Home", "Office"]),
            ("price", "INTEGER", [20, 150]),
            ("stock", "INTEGER", [5, 80]),
        ],
    ),
    "students": (
        "student",
        [
            ("name", "VARCHAR", ["Maria", "Ivan"]),
            ("major", "VARCHAR", ["Physics", "Art"]),
            ("grade", "INTEGER", [85, 92]),
            ("year", "INTEGER", [2, 3]),
        ],
    ),
    "cities": (
        "city",
        [
            ("name", "VARCHAR", ["Lyon", "Osaka"]),
            ("country", "VARCHAR", ["France", "Japan"]),
            ("population", "INTEGER", [500000, 2700000]),
            ("area", "INTEGER", [48, 225]),
        ],
    ),
    "books": (
        "book",
        [
            ("title", "VARCHAR", ["Dune", "Emma"]),
            ("author", "VARCHAR", ["Herbert", "Austen"]),
            ("pages", "INTEGER", [412, 320]),
            ("published", "INTEGER", [1965, 1815]),
        ],
    ),
    "flights": (
        "flight",
        [
            ("code", "VARCHAR", ["AF12", "LH400"]),
            ("origin", "VARCHAR", ["Paris", "Berlin"]),
            ("duration", "INTEGER", [95, 480]),
            ("seats", "INTEGER", [180, 300]),
        ],
    ),
    "movies": (
        "movie",
        [
            ("title", "VARCHAR", ["Up", "Heat"]),
            ("director", "VARCHAR", ["Docter", "Mann"]),
            ("rating", "INTEGER", [8, 7]),
            ("runtime", "INTEGER", [96, 170]),
        ],
    ),
    "teams": (
        "team",
        [
            ("name", "VARCHAR", ["Eagles", "Lions"]),
            ("league", "VARCHAR", ["East", "West"]),
            ("wins", "INTEGER", [12, 4]),
            ("founded", "INTEGER", [1933, 1960]),
        ],
    ),
    # held out: never seen in training
    "hospitals": (
        "hospital",
        [
            ("name", "VARCHAR", ["Mercy", "General"]),
            ("city", "VARCHAR", ["Boston", "Leeds"]),
            ("beds", "INTEGER", [300, 120]),
            ("staff", "INTEGER", [900, 450]),
        ],
    ),
    "cars": (
        "car",
        [
            ("model", "VARCHAR", ["Corolla", "Golf"]),
            ("maker", "VARCHAR", ["Toyota", "VW"]),
            ("horsepower", "INTEGER", [130, 150]),
            ("doors", "INTEGER", [4, 2]),
        ],
    ),
    "restaurants": (
        "restaurant",
        [
            ("name", "VARCHAR", ["Luigi", "Sakura"]),
            ("cuisine", "VARCHAR", ["Italian", "Sushi"]),
            ("seats", "INTEGER", [40, 25]),
            ("score", "INTEGER", [9, 8]),
        ],
    ),
}
HELD_OUT_TABLES = ("hospitals", "cars", "restaurants")


@dataclass(frozen=True)
class Example:
    prompt: str
    sql: str


def make_prompt(schema: str, question: str) -> str:
    return f"[user] {INSTRUCTION}\n\n context: {schema}\n\n question: {question} [/user] [assistant]"


def _literal(value: object) -> str:
    return str(value) if isinstance(value, int) else f"'{value}'"


def make_example(table: str, rng: random.Random) -> Example:
    entity, columns = TABLES[table]
    schema = f"CREATE TABLE {table} (" + ", ".join(f"{c} {t}" for c, t, _ in columns) + ")"
    text_cols = [c for c in columns if c[1] == "VARCHAR"]
    num_cols = [c for c in columns if c[1] == "INTEGER"]
    target, key = rng.sample(columns, 2)
    value = rng.choice(key[2])
    num = rng.choice(num_cols)
    text = rng.choice(text_cols)
    templates = [
        (
            f"What is the {target[0]} of the {entity} whose {key[0]} is {value}?",
            f"SELECT {target[0]} FROM {table} WHERE {key[0]} = {_literal(value)}",
        ),
        (
            f"How many {table} have a {num[0]} greater than {num[2][0]}?",
            f"SELECT COUNT(*) FROM {table} WHERE {num[0]} > {num[2][0]}",
        ),
        (f"What is the average {num[0]} of all {table}?", f"SELECT AVG({num[0]}) FROM {table}"),
        (
            f"What is the highest {num[0]} among {table} with {text[0]} {text[2][0]}?",
            f"SELECT MAX({num[0]}) FROM {table} WHERE {text[0]} = '{text[2][0]}'",
        ),
        (
            f"List the {target[0]} of every {entity} with {key[0]} {value}.",
            f"SELECT {target[0]} FROM {table} WHERE {key[0]} = {_literal(value)}",
        ),
    ]
    question, sql = rng.choice(templates)
    return Example(make_prompt(schema, question), sql)


def make_dataset(num: int, held_out: bool, seed: int) -> list[Example]:
    rng = random.Random(seed)
    tables = [t for t in TABLES if (t in HELD_OUT_TABLES) == held_out]
    return [make_example(rng.choice(tables), rng) for _ in range(num)]


def train(out_dir: Path, steps: int, batch_size: int, rank: int, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraplane.inference_worker.demo import demo_model_path

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    path = demo_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    data = make_dataset(steps * batch_size, held_out=False, seed=seed)
    model.train()
    start = time.monotonic()
    for step in range(steps):
        batch = data[step * batch_size : (step + 1) * batch_size]
        ids, labels = _collate(tokenizer, batch)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            logger.info(
                "step %d/%d loss %.3f (%.0fs)", step + 1, steps, loss.item(), time.monotonic() - start
            )
    model.peft_config["default"].base_model_name_or_path = HUB_MODEL_ID  # not this machine's cache path
    model.save_pretrained(out_dir)
    (out_dir / "README.md").unlink(missing_ok=True)
    logger.info("saved %s", out_dir)


def _collate(tokenizer, batch: list[Example]):
    import torch

    rows, masks = [], []
    for ex in batch:
        prompt = tokenizer(ex.prompt).input_ids
        answer = tokenizer(" " + ex.sql).input_ids + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        masks.append([-100] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    pad = tokenizer.eos_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    labels = torch.tensor([m + [-100] * (width - len(m)) for m in masks])
    return ids, labels


def evaluate(adapter_dir: Path, num: int) -> dict[str, float]:
    """Greedy exact match on held-out tables with HF + peft: base model vs the adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraplane.inference_worker.demo import demo_model_path

    torch.set_num_threads(2)
    path = demo_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), adapter_dir
    )
    examples = make_dataset(num, held_out=True, seed=1234)
    scores = {}
    for label, disabled in (("base", True), ("adapter", False)):
        hits = 0
        for ex in examples:
            ids = tokenizer(ex.prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                if disabled:
                    with model.disable_adapter():
                        out = model.generate(ids, max_new_tokens=40, do_sample=False)
                else:
                    out = model.generate(ids, max_new_tokens=40, do_sample=False)
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            hits += text == ex.sql
        scores[label] = hits / len(examples)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--eval-examples", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.eval_only:
        train(args.out, args.steps, args.batch_size, args.rank, args.seed)
    scores = evaluate(args.out, args.eval_examples)
    logger.info(
        "held-out exact match: base %.0f%%, adapter %.0f%%", 100 * scores["base"], 100 * scores["adapter"]
    )


if __name__ == "__main__":
    main()
