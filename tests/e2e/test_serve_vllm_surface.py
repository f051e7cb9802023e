"""`loraplane serve` as a vLLM user starts it: vLLM flags, an API key from a file (never on a child's
command line), the official openai client, /tokenize and /detokenize on the real demo model, and a flag
that cannot apply refused by name before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2e_support import UpProcess

from loraplane.supervisor import free_port

openai = pytest.importorskip("openai")
KEY = "sk-e2e-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_model_dir):
    root = tmp_path_factory.mktemp("surface")
    (root / "key").write_text(KEY + "\n")
    port = free_port()
    argv = ["serve", "--model", str(demo_model_dir), "--port", str(port), "--data-dir", str(root / "data")]
    argv += ["--max-num-seqs", "4", "--max-model-len", "256", "--api-key-file", str(root / "key")]
    argv += ["-tp", "1", "--trust-remote-code", "--enforce-eager", "--generation-config", "vllm"]
    argv += ["--no-enable-prefix-caching", "--max-num-batched-tokens", "256"]
    up = UpProcess(argv, root / "serve.log")
    try:
        up.ready(timeout_s=600)
        yield f"http://127.0.0.1:{port}", up
    finally:
        up.stop()


def test_the_key_guards_the_api_and_never_shows_in_a_command_line(served):
    url, up = served
    good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    model = good.models.list().data[0].id
    reply = good.completions.create(model=model, prompt="Hello", max_tokens=3, temperature=0)
    assert reply.usage.completion_tokens == 3
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.post(f"{url}/tokenize", json={"prompt": "Hello"}).status_code == 401
    for pid in up.pids.values():
        assert KEY not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


def test_tokenize_and_detokenize_round_trip_on_the_demo_model(served):
    url, _ = served
    auth = {"authorization": f"Bearer {KEY}"}
    tokens = httpx.post(f"{url}/tokenize", json={"prompt": "Hello world"}, headers=auth).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] == 256
    text = httpx.post(f"{url}/detokenize", json={"tokens": tokens["tokens"]}, headers=auth).json()
    assert text == {"prompt": "Hello world"}
    chat = {"messages": [{"role": "user", "content": "Hello"}], "return_token_strs": True}
    reply = httpx.post(f"{url}/tokenize", json=chat, headers=auth).json()
    assert len(reply["token_strs"]) == reply["count"] > len(tokens["tokens"])


def test_a_flag_that_cannot_apply_is_refused_by_name_before_anything_starts(tmp_path):
    argv = [sys.executable, "-m", "loraplane", "serve", "--data-dir", str(tmp_path), "-tp", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--tensor-parallel-size 2: tensor, pipeline" in done.stderr and "usage:" not in done.stderr
