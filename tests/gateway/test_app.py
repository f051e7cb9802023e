"""The gateway against fake workers, through the official `openai` client, unmodified."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_models_list_shows_lineage(openai_client):
    models = (await openai_client.models.list()).data
    assert models[0].id == "fake-base" and models[0].parent is None and models[0].root == "/models/fake-base"
    adapters = {m.id: m for m in models[1:]}
    assert set(adapters) == {"sql-lora", "chat-lora"}
    assert all(m.parent == "fake-base" and m.root == f"/adapters/{m.id}" for m in adapters.values())
    assert models[0].max_model_len == 2048 and all(m.max_model_len is None for m in adapters.values())
    assert all(m.permission[0]["object"] == "model_permission" for m in models)


@pytest.mark.parametrize("model", ["fake-base", "sql-lora"])
async def test_completion_base_and_adapter(openai_client, model):
    reply = await openai_client.completions.create(model=model, prompt="hello world", max_tokens=5)
    assert reply.model == model
    assert len(reply.choices) == 1 and reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].text.split()) == 5
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 5


@pytest.mark.parametrize("model", ["fake-base", "chat-lora"])
async def test_chat_base_and_adapter(openai_client, model):
    reply = await openai_client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "say hi"}], max_tokens=4
    )
    assert reply.choices[0].message.role == "assistant"
    assert len(reply.choices[0].message.content.split()) == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


async def test_completion_streaming_with_usage(openai_client):
    stream = await openai_client.completions.create(
        model="sql-lora", prompt="a b c", max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) == 6 and text_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


async def test_chat_streaming_role_first(openai_client):
    stream = await openai_client.chat.completions.create(
        model="fake-base", messages=[{"role": "user", "content": "x"}], max_tokens=3, stream=True, n=2
    )
    chunks = [c async for c in stream]
    per_choice: dict[int, list] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            per_choice.setdefault(choice.index, []).append(choice)
    assert set(per_choice) == {0, 1}
    for choices in per_choice.values():
        assert choices[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in choices).split().__len__() == 3
        assert choices[-1].finish_reason == "length"


async def test_n_and_prompt_list(openai_client):
    reply = await openai_client.completions.create(
        model="fake-base", prompt=["one", "two three"], n=3, max_tokens=2, seed=1
    )
    assert sorted(c.index for c in reply.choices) == list(range(6))
    assert reply.usage.prompt_tokens == 3 and reply.usage.completion_tokens == 12


async def test_token_id_prompts_and_echo(openai_client):
    reply = await openai_client.completions.create(
        model="fake-base", prompt=[[5, 6, 7], [8]], max_tokens=1, echo=True
    )
    assert reply.choices[0].text.startswith("567") and reply.choices[1].text.startswith("8")
    text = await openai_client.completions.create(model="fake-base", prompt="q r", max_tokens=1, echo=True)
    assert text.choices[0].text.startswith("q r ")


async def test_stop_string_ends_choice(openai_client):
    full = await openai_client.completions.create(model="fake-base", prompt="p", max_tokens=8, seed=3)
    word = full.choices[0].text.split()[2]
    stopped = await openai_client.completions.create(
        model="fake-base", prompt="p", max_tokens=8, seed=3, stop=[word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in stopped.choices[0].text and full.choices[0].text.startswith(stopped.choices[0].text)


async def test_seed_reproducible(openai_client):
    texts = [
        (await openai_client.completions.create(model="sql-lora", prompt="p", max_tokens=8, seed=7))
        .choices[0]
        .text
        for _ in range(3)
    ]
    assert len(set(texts)) == 1


async def test_logprobs_shapes(openai_client):
    reply = await openai_client.completions.create(model="fake-base", prompt="p", max_tokens=3, logprobs=1)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == 3 and len(logprobs.token_logprobs) == 3 and logprobs.text_offset[0] == 0
    chat = await openai_client.chat.completions.create(
        model="fake-base",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=2,
        logprobs=True,
        top_logprobs=1,
    )
    assert len(chat.choices[0].logprobs.content) == 2


async def test_unknown_model_is_404(openai_client):
    with pytest.raises(openai.NotFoundError) as info:
        await openai_client.completions.create(model="nope", prompt="p", max_tokens=1)
    assert "nope" in info.value.body["message"] and info.value.body["param"] == "model"


async def test_invalid_input_is_400(openai_client):
    with pytest.raises(openai.BadRequestError):
        await openai_client.completions.create(model="fake-base", prompt="p", temperature=-1)
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.completions.create(model="fake-base", prompt=[], max_tokens=1)
    assert info.value.body["param"] == "prompt"


async def test_runtime_lora_routes_not_mounted_by_default(stack):
    async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
        reply = await client.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"})
    assert reply.status_code == 404


async def test_health_and_metrics(stack, openai_client):
    await openai_client.completions.create(model="sql-lora", prompt="p", max_tokens=2)
    async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
        assert (await client.get("/health")).json()["workers"] == 2
        text = (await client.get("/metrics")).text
    assert 'loraplane_gateway_adapter_requests_total{adapter="sql-lora"}' in text
    assert "loraplane_gateway_time_to_first_token_seconds_count" in text
    assert "loraplane_gateway_inter_token_latency_seconds_bucket" in text


async def test_max_tokens_defaults_like_vllm(openai_client):
    """Completions default to 16 tokens (OpenAI, vLLM); chat leaves max_tokens unset (up to the context)."""
    from loraplane.gateway.testing import UNSET_MAX_TOKENS

    reply = await openai_client.completions.create(model="fake-base", prompt="p")
    assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"
    chat = await openai_client.chat.completions.create(
        model="fake-base", messages=[{"role": "user", "content": "x"}]
    )
    assert chat.usage.completion_tokens == UNSET_MAX_TOKENS


BAD_BODIES = [
    (
        {"content": b'{"model": "fake-base",', "headers": {"content-type": "application/json"}},
        "not valid JSON",
    ),
    ({"data": {"model": "fake-base", "prompt": "p"}}, "Only 'application/json' is allowed"),
    ({"json": {"model": "fake-base"}}, "prompt: Field required"),
    ({"json": {"model": "fake-base", "prompt": "p", "max_tokens": "many"}}, "max_tokens"),
]


@pytest.mark.parametrize(("send", "words"), BAD_BODIES)
async def test_malformed_bodies_are_400_openai_errors(stack, send, words):
    async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
        reply = await client.post("/v1/completions", **send)
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["code"] == 400 and words in error["message"], error


async def test_routing_errors_are_openai_errors(stack):
    async with httpx.AsyncClient(base_url=stack.gateway.url) as client:
        load = await client.post("/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": "/x"})
        unknown = await client.get("/v1/nothing")
        wrong_method = await client.get("/v1/completions")
    assert (
        load.status_code == 404
        and "LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING=true" in load.json()["error"]["message"]
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFoundError"
    assert wrong_method.status_code == 405 and "GET" in wrong_method.json()["error"]["message"]
