"""Multi-LoRA serving throughput: Llama-2-7B shape, dummy weights, many distinct rank-16 adapters.

Output tokens/s of the engine with requests spread over 32 or 256 distinct adapters (on q,k,v,o or on
all seven projections; batch 32 and 256) against the same engine serving the base model, and against
HF PEFT's mixed-adapter `generate(..., adapter_names=...)` in the same run.

    python -m benchmarks.lora            # the H200 run (writes benchmarks/results/lora_h200.json)
    python -m benchmarks.lora --smoke    # tiny shapes on the CPU, to check the script

Adapters are written by this script (random weights, PEFT's file layout); adapters of one target set share
one weight file through hard links, and each gets its own adapter_config.json (a distinct lora_alpha), so
every adapter has its own version and GPU slot. Prompts are random token ids with ignore_eos.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import environment
from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.lora import LoRARequest
from loraplane.inference_worker.testing import LLAMA2_7B

logger = logging.getLogger("bench_lora")

SMOKE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=512,
    max_position_embeddings=512,
)
TARGETS = {
    "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all7": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
PARENT = {"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def write_model_dir(root: Path, shape: dict) -> Path:
    """config.json of a Llama with `shape` plus a word-level tokenizer over the whole vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    path = root / "model"
    LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16").save_pretrained(path)
    vocab = {f"t{i}": i for i in range(shape["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t1", eos_token="t2").save_pretrained(path)
    return path


def _module_shapes(shape: dict) -> dict[str, tuple[int, int]]:
    h, i = shape["hidden_size"], shape["intermediate_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    return {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def write_adapters(root: Path, shape: dict, target: str, count: int, rank: int) -> list[Path]:
    """`count` adapters in PEFT's layout sharing one random weight file (hard links)."""
    from safetensors.torch import save_file

    shapes, tensors = _module_shapes(shape), {}
    gen = torch.Generator().manual_seed(0)
    for layer in range(shape["num_hidden_layers"]):
        for module in TARGETS[target]:
            prefix = f"base_model.model.model.layers.{layer}.{PARENT.get(module, 'self_attn')}.{module}"
            fan_in, fan_out = shapes[module]
            tensors[f"{prefix}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=gen) * 0.01).bfloat16()
            tensors[f"{prefix}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=gen) * 0.01).bfloat16()
    weights = root / f"{target}-weights.safetensors"
    save_file(tensors, str(weights))
    paths = []
    for index in range(count):
        path = root / f"{target}-{index}"
        path.mkdir()
        config = {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": rank + index,
            "target_modules": TARGETS[target],
        }
        (path / "adapter_config.json").write_text(json.dumps(config))
        os.link(weights, path / "adapter_model.safetensors")
        paths.append(path)
    return paths


def prompts(batch: int, input_len: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (batch, input_len), generator=gen).tolist()


def run_engine(llm: LLM, batch: int, args, loras: list | None) -> dict:
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    ids = prompts(batch, args.input_len, llm.engine.hf_config.vocab_size, seed=batch)
    requests = None if loras is None else [loras[i % len(loras)] for i in range(batch)]
    # Warm-up with other prompts (no prefix-cache hits later) over the same adapters, so the timed run
    # measures serving with the batch's adapters resident in their GPU slots.
    warm_ids = prompts(batch, args.input_len, llm.engine.hf_config.vocab_size, seed=batch + 1)
    llm.generate(warm_ids, SamplingParams(max_tokens=2, ignore_eos=True), lora_request=requests)
    _sync()
    start = time.perf_counter()
    outputs = llm.generate(ids, params, lora_request=requests)
    _sync()
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"batch": batch, "output_tokens": tokens, "seconds": seconds, "tok_per_s": tokens / seconds}


def bench_engine(model_dir: Path, adapter_sets: dict, args, rows: Results) -> None:
    llm = _make_llm(model_dir, args, enable_lora=False)
    for batch in args.batch_sizes:
        rows.append(
            {"engine": "loraplane", "lora": "none", "adapters": 0, **run_engine(llm, batch, args, None)}
        )
    del llm
    _free()
    for target, paths in adapter_sets.items():
        # One engine per target set, serving LoRA only on those projections (lora_target_modules), unless
        # --wrap-all-modules asks for every projection wrapped (the untargeted ones then add zero deltas).
        modules = None if args.wrap_all_modules else tuple(TARGETS[target])
        llm = _make_llm(model_dir, args, enable_lora=True, lora_target_modules=modules)
        for count in args.num_adapters:
            loras = _add_adapters(llm, paths[:count], target)
            for batch in args.batch_sizes:
                row = run_engine(llm, batch, args, loras)
                rows.append(
                    {
                        "engine": "loraplane",
                        "lora": target,
                        "adapters": min(count, batch),
                        "lora_target_modules": "all" if modules is None else ",".join(modules),
                        **row,
                    }
                )
        del llm
        _free()


def _add_adapters(llm: LLM, paths: list[Path], target: str) -> list[LoRARequest]:
    start = time.perf_counter()
    requests = [
        LoRARequest(p.name, 1 + i + 1000 * list(TARGETS).index(target), str(p)) for i, p in enumerate(paths)
    ]
    futures = [llm.engine.lora_manager.add(r) for r in requests]
    for future in futures:
        future.result()
    logger.info("added %d %s adapters in %.1fs", len(paths), target, time.perf_counter() - start)
    return requests


def bench_hf_peft(shape: dict, args, device: torch.device, rows: Results) -> None:
    """HF transformers + PEFT, mixed adapters in one `generate` through `adapter_names`."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=1, eos_token_id=2)).to(dtype).eval()
    for target in args.hf_targets:
        config = LoraConfig(
            r=args.rank, lora_alpha=16, target_modules=TARGETS[target], init_lora_weights=False
        )
        count = args.hf_adapters
        peft_model = get_peft_model(model, config, adapter_name="a0")
        for index in range(1, count):
            peft_model.add_adapter(f"a{index}", config)
        peft_model.to(dtype).eval()
        batch = args.hf_batch
        ids = torch.tensor(prompts(batch, args.input_len, shape["vocab_size"], seed=batch), device=device)
        names = [f"a{i % count}" for i in range(batch)]
        kwargs = dict(
            do_sample=False,
            min_new_tokens=args.hf_output_len,
            max_new_tokens=args.hf_output_len,
            attention_mask=torch.ones_like(ids),
            pad_token_id=0,
        )
        with torch.no_grad():
            peft_model.generate(
                input_ids=ids[:, :8],
                adapter_names=names,
                max_new_tokens=2,
                do_sample=False,
                attention_mask=torch.ones_like(ids[:, :8]),
                pad_token_id=0,
            )
            _sync()
            start = time.perf_counter()
            out = peft_model.generate(input_ids=ids, adapter_names=names, **kwargs)
            _sync()
        seconds = time.perf_counter() - start
        tokens = (out.shape[1] - ids.shape[1]) * batch
        rows.append(
            {
                "engine": "hf_peft",
                "lora": target,
                "adapters": count,
                "batch": batch,
                "output_tokens": tokens,
                "seconds": seconds,
                "tok_per_s": tokens / seconds,
            }
        )
        model = peft_model.unload()
    return rows


def _make_llm(model_dir: Path, args, enable_lora: bool, lora_target_modules=None) -> LLM:
    return LLM(
        str(model_dir),
        load_format="dummy",
        dtype=args.dtype,
        device=args.device,
        max_num_seqs=max(args.batch_sizes),
        max_model_len=args.input_len + args.output_len + 16,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_lora=enable_lora,
        max_loras=max(args.num_adapters),
        max_cpu_loras=max(args.num_adapters),
        max_lora_rank=args.rank,
        lora_target_modules=lora_target_modules,
    )


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarize(rows: list[dict]) -> list[dict]:
    """Adds each LoRA row's speed relative to the base engine and to HF PEFT (same adapters and batch)."""
    base = {r["batch"]: r["tok_per_s"] for r in rows if r["engine"] == "loraplane" and r["lora"] == "none"}
    hf = {(r["lora"], r["adapters"], r["batch"]): r["tok_per_s"] for r in rows if r["engine"] == "hf_peft"}
    for row in rows:
        if row["engine"] == "loraplane" and row["lora"] != "none":
            if row["batch"] in base:
                row["vs_no_lora"] = row["tok_per_s"] / base[row["batch"]]
            key = (row["lora"], row["adapters"], row["batch"])
            if key in hf:
                row["vs_hf_peft"] = row["tok_per_s"] / hf[key]
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'engine':10} {'lora':5} {'adapters':>8} {'batch':>5} {'tok/s':>10} {'vs base':>8} {'vs PEFT':>8}"
    )
    print(header)
    for r in rows:
        vs_base = f"{r['vs_no_lora']:.2f}x" if "vs_no_lora" in r else ""
        vs_hf = f"{r['vs_hf_peft']:.1f}x" if "vs_hf_peft" in r else ""
        print(
            f"{r['engine']:10} {r['lora']:5} {r['adapters']:>8} {r['batch']:>5} {r['tok_per_s']:>10.1f} "
            f"{vs_base:>8} {vs_hf:>8}"
        )


def _library_versions() -> dict[str, str]:
    import peft
    import transformers

    return {"peft": peft.__version__, "transformers": transformers.__version__}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--num-adapters", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--wrap-all-modules",
        action="store_true",
        help="wrap all seven projections whatever the adapters target (default: only the targeted ones)",
    )
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--hf-targets", nargs="*", default=["qkvo"], choices=list(TARGETS))
    parser.add_argument("--hf-adapters", type=int, default=32)
    parser.add_argument("--hf-batch", type=int, default=32)
    parser.add_argument("--hf-output-len", type=int, default=32)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.device = "cpu" if args.smoke else "cuda"
    args.dtype = "float32" if args.smoke else "bfloat16"
    if args.smoke:
        args.batch_sizes, args.num_adapters, args.input_len, args.output_len = [4], [2, 4], 8, 4
        args.hf_adapters, args.hf_batch, args.hf_output_len = 2, 4, 4
    default = "lora_smoke.json" if args.smoke else "lora_h200.json"
    args.out = args.out or Path(__file__).parent / "results" / default
    return args


class Results(list):
    """Rows of the run, saved (with the environment) after every row so a cut-short run keeps its numbers."""

    def __init__(self, args, shape: dict, device: torch.device) -> None:
        super().__init__()
        self.path = args.out
        self.header = {
            "benchmark": "lora",
            "shape": "smoke" if args.smoke else "llama-2-7b",
            "config": shape,
            "rank": args.rank,
            "input_len": args.input_len,
            "output_len": args.output_len,
            "hf_output_len": args.hf_output_len,
            "environment": {**environment(device), **_library_versions()},
            "commit": _git_commit(),
        }

    def append(self, row: dict) -> None:
        super().append(row)
        logger.info("%s", row)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = summarize([dict(r) for r in self])
        self.path.write_text(json.dumps({**self.header, "rows": rows}, indent=2, default=str))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    shape = SMOKE if args.smoke else LLAMA2_7B
    device = torch.device(args.device)
    rows = Results(args, shape, device)
    if args.hf_targets:  # first: its numbers survive even if a later part fails
        bench_hf_peft(shape, args, device, rows)
        _free()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = write_model_dir(root, shape)
        adapter_sets = {
            t: write_adapters(root, shape, t, max(args.num_adapters), args.rank) for t in args.targets
        }
        bench_engine(model_dir, adapter_sets, args, rows)
    print_table(summarize([dict(r) for r in rows]))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
