"""Warm start-up and memory of the demo: `loraplane serve`, `loraplane up --workers 2`, the offline API.

Each run starts the command from scratch on the warm per-machine cache (converted demo model, built CPU
extensions) and measures:
- `serve` / `up`: seconds from launch until the first completion is answered (POST /v1/completions,
  polled), then the resident memory summed over the command's whole process tree (RSS, and PSS, which
  counts pages shared between processes once), with a per-process breakdown;
- `offline`: seconds from launch until `examples/offline_generate.py` exits (it loads the demo model,
  the demo adapter, and generates with and without it), and its peak RSS.
The machine may be shared: each scenario runs `--repeat` times and the minimum is reported, with the CPU
seconds (user + system, all processes) the run used, which other processes' load barely changes.

python -P benchmarks/startup.py [--repeat 2] [--only serve,up,offline] [--out results.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "examples" / "adapters" / "sql-lora"
PROMPT = "[user] Write a SQL query. context: CREATE TABLE head (age INTEGER) [/user] [assistant]"
TIMEOUT_S = 900.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) `pid` and its live descendants have used, with their reaped children."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_memory(pid: int) -> dict:
    """RSS and PSS (MB) summed over `pid` and all its descendants, with one row per process."""
    root = psutil.Process(pid)
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            cmd = " ".join(proc.cmdline()[1:4])
        except psutil.Error:
            continue
        rows.append({"pid": proc.pid, "cmd": cmd, "rss_mb": info.rss / 2**20, "pss_mb": info.pss / 2**20})
    return {
        "rss_mb": sum(r["rss_mb"] for r in rows),
        "pss_mb": sum(r["pss_mb"] for r in rows),
        "processes": rows,
    }


def complete(port: int, model: str) -> bool:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status == 200 and bool(json.load(response)["choices"][0]["text"] is not None)
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError):
        return False  # not up yet (or, on a shared machine, another process took the port: see main)


def run_server(command: str, extra: list[str]) -> dict:
    """Launch `loraplane <command>` with the demo adapter; time to first completion, then memory."""
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="lp-startup-")
    argv = [shutil.which("loraplane") or "loraplane", command, *extra, "--enable-lora"]
    argv += ["--lora-modules", f"sql-lora={ADAPTER}", "--port", str(port), "--host", "127.0.0.1"]
    argv += ["--data-dir", data_dir, "--control-plane-port", "0"]
    log = open(Path(data_dir) / "out.log", "w")  # noqa: SIM115 - closed below
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not complete(port, "sql-lora"):
            if proc.poll() is not None:
                tail = Path(log.name).read_text()[-2000:]
                raise RuntimeError(f"{command} exited {proc.returncode}: {tail}")
            if time.perf_counter() - started > TIMEOUT_S:
                raise TimeoutError(f"{command}: no completion in {TIMEOUT_S} s")
            time.sleep(0.25)
        answered = time.perf_counter() - started
        cpu_s = tree_cpu_s(proc.pid)
        time.sleep(2.0)  # let residency and heartbeats settle
        memory = tree_memory(proc.pid)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return {"first_completion_s": answered, "cpu_s": cpu_s, **memory}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_offline() -> dict:
    """`examples/offline_generate.py` from launch to exit, and its peak RSS (sampled every 0.1 s)."""
    started = time.perf_counter()
    cpu_before = _children_cpu_s()
    proc = subprocess.Popen(
        [sys.executable, "-P", str(ROOT / "examples" / "offline_generate.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"offline_generate.py exited {proc.returncode}: {stderr[-2000:]}")
    cpu_s = _children_cpu_s() - cpu_before
    return {"exit_s": elapsed, "cpu_s": cpu_s, "peak_rss_mb": peak / 2**20, "stdout": stdout.strip()}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


SCENARIOS = {
    "serve": (lambda: run_server("serve", []), "first_completion_s"),
    "up2": (lambda: run_server("up", ["--workers", "2"]), "first_completion_s"),
    "offline": (run_offline, "exit_s"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: serve,up2,offline")
    parser.add_argument("--label", default="", help="a name for this run (e.g. before, after)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = {}
    for name in args.only.split(","):
        fn, key = SCENARIOS[name]
        runs = []
        for i in range(args.repeat):
            try:
                runs.append(fn())
            except RuntimeError as exc:  # a port taken between our probe and the bind: once more
                print(f"{name} run {i + 1} failed, retrying: {str(exc)[-300:]}", flush=True)
                runs.append(fn())
            print(f"{name} run {i + 1}: {key}={runs[-1][key]:.1f}", flush=True)
        best = min(runs, key=lambda r: r[key])
        summary = [{k: v for k, v in r.items() if k != "processes"} for r in runs]
        results[name] = {"best": best, "runs": summary}
    import torch

    doc = {
        "label": args.label,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "load_avg": os.getloadavg()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "results": results,
    }
    print(f"{'scenario':<10}{'seconds (min)':>15}{'CPU s':>8}{'RSS MB':>10}{'PSS MB':>10}")
    for name, r in results.items():
        best = r["best"]
        seconds = best.get("first_completion_s", best.get("exit_s"))
        rss = best.get("rss_mb", best.get("peak_rss_mb"))
        cpu = min(run.get("cpu_s", float("nan")) for run in r["runs"])
        print(f"{name:<10}{seconds:>15.1f}{cpu:>8.1f}{rss:>10.0f}{best.get('pss_mb', float('nan')):>10.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
