#!/usr/bin/env bash
# Load, use and unload an adapter at run time (the server must run with
# LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING=true). Usage: examples/runtime_lora.sh [BASE_URL] [ADAPTER_DIR]
set -euo pipefail
url=${1:-http://127.0.0.1:8000}
path=$(realpath "${2:-examples/adapters/sql-lora}")
curl -s -X POST "$url/v1/load_lora_adapter" -H 'content-type: application/json' \
  -d "{\"lora_name\": \"sql-lora-2\", \"lora_path\": \"$path\"}"; echo
curl -s "$url/v1/completions" -H 'content-type: application/json' \
  -d '{"model": "sql-lora-2", "prompt": "SELECT", "max_tokens": 16, "temperature": 0}'; echo
curl -s -X POST "$url/v1/unload_lora_adapter" -H 'content-type: application/json' \
  -d '{"lora_name": "sql-lora-2"}'; echo
