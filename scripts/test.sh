#!/usr/bin/env bash
# Installs what the tests need, checks lint and generated code, and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
echo "installing the Node.js gRPC client used by cross-language tests"
npm ci --prefix tests/node --no-audit --no-fund --silent

ruff check .
ruff format --check .
python scripts/gen_protos.py --check
python -m pytest "$@"
