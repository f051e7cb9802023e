"""Shared benchmark helpers: timing by CUDA-graph replay, measured ceilings, environment facts."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch
import triton
import triton.language as tl


def bench_us(fn: Callable[[], object], device: torch.device) -> float:
    """Median microseconds of one ``fn()``.

    On CUDA ``fn`` is captured once into a CUDA graph and the replay is timed with
    ``triton.testing.do_bench``, which clears the L2 cache before every replay (cold weights, as in
    serving). On the CPU (``--smoke``) a few wall-clock calls.
    """
    if device.type != "cuda":
        fn()
        start = time.perf_counter()
        for _ in range(3):
            fn()
        return (time.perf_counter() - start) / 3 * 1e6
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    micros = triton.testing.do_bench(graph.replay, warmup=5, rep=40, return_mode="median") * 1e3
    del graph
    return micros


def bench_sequence_us(fns: list[Callable[[], object]], device: torch.device) -> float:
    """Median microseconds per call when ``fns`` run back to back in one CUDA graph.

    Give each call its own weights (the layers of a forward pass): the L2 cache is cleared once per
    replay, so every call still reads cold weights, but a replay's launch is shared, as in a captured
    forward.
    """
    return bench_us(lambda: [fn() for fn in fns], device) / len(fns)


@triton.jit
def _read_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for step in range(STEPS):
        offs = (tl.program_id(0) * STEPS + step) * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(src_ptr + offs, mask=offs < n, other=0).to(tl.float32)
    tl.store(dst_ptr + tl.program_id(0), tl.sum(acc))


def read_us(num_bytes: int, device: torch.device, block: int = 4096, steps: int = 4) -> float:
    """Time (``bench_us``) of a plain streaming read of ``num_bytes``: the fastest that many bytes go."""
    src = torch.zeros(num_bytes // 2, dtype=torch.bfloat16, device=device)
    programs = triton.cdiv(src.numel(), block * steps)
    dst = torch.empty(programs, dtype=torch.float32, device=device)
    return bench_us(
        lambda: _read_kernel[(programs,)](src, dst, src.numel(), BLOCK=block, STEPS=steps), device
    )


def measure_ceilings(device: torch.device) -> dict[str, float]:
    """Device copy bandwidth (bytes read + written per second) and bf16 matmul rate on random data."""
    if device.type != "cuda":
        return {"copy_gbps": float("nan"), "bf16_tflops": float("nan")}
    src = torch.empty(2**30, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    copy_ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=5, rep=200, return_mode="median")
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    mm_ms = triton.testing.do_bench(lambda: a @ b, warmup=10, rep=300, return_mode="median")
    return {"copy_gbps": 2 * 2**30 / copy_ms / 1e6, "bf16_tflops": 2 * n**3 / mm_ms / 1e9}


def environment(device: torch.device) -> dict[str, object]:
    """The card and software versions the numbers were measured with."""
    info: dict[str, object] = {
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            card=props.name,
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
        )
    else:
        info["card"] = platform.processor() or platform.machine()
    return info


def format_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain fixed-width table of ``columns`` from ``rows`` (floats with 1 decimal)."""

    def cell(value: object) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
