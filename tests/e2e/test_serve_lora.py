"""vLLM's OpenAI-server LoRA behaviour against `loraplane serve` with runtime updates enabled.

Static and dynamic lineage, duplicate loads, missing and invalid adapters, unknown unloads, ten
adapters at once with max_cpu_loras=2, and fifty bad loads that leave running completions alone.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil

import grpc
import httpx
import openai
import pytest
from e2e_support import UpProcess, control_plane_address, rogue_connect, write_random_adapter

from loraplane.supervisor import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_model_dir):
    root = tmp_path_factory.mktemp("serve")
    static = write_random_adapter(demo_model_dir, root / "static-lora", seed=11)
    port = free_port()
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(root / "data")]
    argv += ["--max-num-seqs", "8", "--max-model-len", "512", "--adapter-root", str(root)]
    argv += [
        "--enable-lora",
        "--max-loras",
        "2",
        "--max-cpu-loras",
        "2",
        "--lora-modules",
        f"static-lora={static}",
    ]
    os.environ["LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING"] = "true"
    try:
        up = UpProcess(argv, root / "serve.log")
    finally:
        del os.environ["LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING"]
    try:
        up.ready(timeout_s=600)
        yield f"http://127.0.0.1:{port}", root, static
    finally:
        up.stop()


def load(url: str, name: str, path: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path, **extra}, timeout=120
    )


def variant(root, static: str, name: str, **config) -> str:
    path = root / name
    shutil.copytree(static, path)
    body = json.loads((path / "adapter_config.json").read_text()) | config
    (path / "adapter_config.json").write_text(json.dumps(body))
    return str(path)


def test_static_and_dynamic_lineage(served):
    url, root, static = served
    models = httpx.get(f"{url}/v1/models").json()["data"]
    base = models[0]
    assert base["parent"] is None and models[1]["id"] == "static-lora" and models[1]["parent"] == base["id"]
    reply = load(url, "dynamic-lora", static)
    assert reply.status_code == 200 and "success" in reply.text
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert any(m["id"] == "dynamic-lora" and m["parent"] == base["id"] for m in models)


def test_second_load_of_a_taken_name_is_400(served):
    url, _, static = served
    reply = load(url, "static-lora", static)
    assert reply.status_code == 400 and "has already been loaded" in reply.json()["error"]["message"]


def test_path_without_adapter_is_404(served):
    url, root, _ = served
    reply = load(url, "notfound", str(root / "not" / "an" / "adapter"))
    assert reply.status_code == 404 and "No adapter found" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "config", "words"),
    [("rank-1024", {"r": 1024}, "rank"), ("dora", {"use_dora": True}, "dora"),
     ("mts", {"modules_to_save": ["lm_head"]}, "modules_to_save")],
)  # fmt: skip
def test_unloadable_adapters_are_400_naming_the_problem(served, name, config, words):
    url, root, static = served
    reply = load(url, name, variant(root, static, name, **config))
    assert reply.status_code == 400 and words in reply.json()["error"]["message"].lower()


def not_json_adapter(root) -> str:
    bad = root / "not-json"
    bad.mkdir(exist_ok=True)
    (bad / "adapter_config.json").write_text("this is not json")
    return str(bad)


def test_invalid_files_are_400(served):
    url, root, _ = served
    assert load(url, "not-json", not_json_adapter(root)).status_code == 400


def test_unknown_unload_is_404_and_unload_removes(served):
    url, _, static = served
    reply = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert reply.status_code == 404 and "cannot be found" in reply.json()["error"]["message"]
    assert load(url, "short-lived", static).status_code == 200
    reply = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "short-lived"}, timeout=60)
    assert reply.status_code == 200 and "removed successfully" in reply.text
    assert "short-lived" not in {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}


def test_ten_adapters_loaded_concurrently_all_serve(served):
    url, _, static = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)

    def load_and_complete(i: int) -> int:
        assert load(url, f"adapter-{i}", static).status_code == 200
        reply = client.completions.create(
            model=f"adapter-{i}", prompt=["Hello there", "Foo bar"], max_tokens=3
        )
        return len(reply.choices)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        assert list(pool.map(load_and_complete, range(10))) == [2] * 10


def test_fifty_bad_loads_do_not_disturb_running_completions(served):
    url, root, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)
    bad = not_json_adapter(root)

    def completions() -> int:
        return sum(
            len(client.completions.create(model="static-lora", prompt="Hi", max_tokens=2).choices)
            for _ in range(5)
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(completions)
        for i in range(25):
            assert load(url, f"missing-{i}", str(root / f"missing-{i}")).status_code == 404
            assert load(url, f"invalid-{i}", bad).status_code == 400
        assert running.result() == 5


def test_openai_client_paths_on_the_real_worker(served):
    """The common `openai` paths against the real engine: vLLM's default of 16 completion tokens, echo
    with logprobs, n with a seed, stop, and a stream that ends with usage."""
    url, _, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    plain = client.completions.create(model="static-lora", prompt="Hi", extra_body={"ignore_eos": True})
    assert plain.usage.completion_tokens == 16 and plain.choices[0].finish_reason == "length"
    echoed = client.completions.create(model="static-lora", prompt="Hi there", max_tokens=2, echo=True)
    assert echoed.choices[0].text.startswith("Hi there") and len(echoed.choices[0].text) > len("Hi there")
    echoed = client.completions.create(  # the engine's prompt logprobs
        model="static-lora", prompt="Hi there", max_tokens=2, echo=True, logprobs=1
    )
    logprobs, num_prompt = echoed.choices[0].logprobs, echoed.usage.prompt_tokens
    assert len(logprobs.tokens) == num_prompt + echoed.usage.completion_tokens
    assert "".join(logprobs.tokens[:num_prompt]) == "Hi there"
    assert echoed.choices[0].text.startswith("Hi there")
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:]) and all(logprobs.top_logprobs[1:])
    seeded = [
        [
            c.text
            for c in client.completions.create(
                model="static-lora", prompt="Hi", max_tokens=4, n=2, seed=5
            ).choices
        ]
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 2
    full = client.completions.create(
        model="static-lora", prompt="Hi", max_tokens=6, temperature=0, extra_body={"ignore_eos": True}
    )
    stop = full.choices[0].text[2:4]
    stopped = client.completions.create(
        model="static-lora", prompt="Hi", max_tokens=6, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].finish_reason == "stop" and stop not in stopped.choices[0].text
    chunks = list(
        client.chat.completions.create(
            model="static-lora",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


BAD_REQUESTS = [
    (dict(prompt="word " * 600), openai.BadRequestError, "max_model_len"),
    (dict(max_tokens=600), openai.BadRequestError, "maximum context length is 512 tokens"),
    (dict(max_tokens=-1), openai.BadRequestError, "max_tokens"),
    (dict(temperature=-1), openai.BadRequestError, "temperature"),
    (dict(model="no-such-model"), openai.NotFoundError, "no-such-model"),
]


@pytest.mark.parametrize(("fields", "error", "words"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors_from_the_real_worker(served, fields, error, words):
    url, _, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(error) as info:
        client.completions.create(**{"model": "static-lora", "prompt": "Hi", "max_tokens": 2, **fields})
    assert words in info.value.body["message"]


def test_a_stranger_cannot_join_the_fleet(served):
    url, root, _ = served
    target = control_plane_address((root / "serve.log").read_text())
    assert rogue_connect(target) == grpc.StatusCode.UNAUTHENTICATED
    assert rogue_connect(target, worker_id="worker-0", token="guess") == grpc.StatusCode.UNAUTHENTICATED
    assert httpx.get(f"{url}/v1/models").status_code == 200
