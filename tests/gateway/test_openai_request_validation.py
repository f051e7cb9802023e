"""Bad input is a 400 naming the field, never a 500: integers past their protobuf field's type, non-finite
floats, unpaired UTF-16 surrogates in strings, and `n` over the gateway's --max-n."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from loraplane.gateway.config import DEFAULT_MAX_N

pytestmark = pytest.mark.asyncio(loop_scope="session")

INT32_PAST = 2**31
INT64_PAST = 2**63
CHAT = {"messages": [{"role": "user", "content": "x"}]}

OUT_OF_RANGE = [
    ("/v1/completions", {"prompt": "p", "max_tokens": INT32_PAST}, "max_tokens"),
    ("/v1/completions", {"prompt": "p", "n": INT32_PAST}, "n"),
    ("/v1/completions", {"prompt": "p", "top_k": INT32_PAST}, "top_k"),
    ("/v1/completions", {"prompt": "p", "top_k": -INT32_PAST - 1}, "top_k"),
    ("/v1/completions", {"prompt": "p", "seed": INT64_PAST}, "seed"),
    ("/v1/completions", {"prompt": "p", "seed": -INT64_PAST - 1}, "seed"),
    ("/v1/completions", {"prompt": "p", "logprobs": INT32_PAST}, "logprobs"),
    ("/v1/completions", {"prompt": "p", "prompt_logprobs": INT32_PAST}, "prompt_logprobs"),
    ("/v1/completions", {"prompt": "p", "min_tokens": INT32_PAST}, "min_tokens"),
    ("/v1/completions", {"prompt": "p", "stop_token_ids": [1, INT32_PAST]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "p", "stop_token_ids": [-1]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "p", "logit_bias": {str(INT32_PAST): 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "p", "logit_bias": {"5": 101}}, "logit_bias"),
    ("/v1/completions", {"prompt": [1, INT32_PAST]}, "prompt"),
    ("/v1/completions", {"prompt": [-1]}, "prompt"),
    ("/v1/completions", {"prompt": [[1], [2, INT32_PAST]]}, "prompt"),
    ("/v1/completions", {"prompt": "p", "temperature": float("inf")}, "temperature"),
    ("/v1/completions", {"prompt": "p", "top_p": float("nan")}, "top_p"),
    ("/v1/completions", {"prompt": "p", "min_p": 1e39}, "min_p"),
    ("/v1/completions", {"prompt": "p", "n": 0}, "n"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": INT32_PAST}, "max_completion_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": INT32_PAST}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": INT32_PAST}, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "seed": INT64_PAST}, "seed"),
]

# Raw JSON: "\ud800" is valid JSON text but an unpaired surrogate, which UTF-8 (and protobuf) cannot hold.
SURROGATES = [
    ("/v1/completions", r'{"prompt": "a\ud800"}', "prompt"),
    ("/v1/completions", r'{"prompt": ["ok", "\udc00"]}', "prompt"),
    ("/v1/completions", r'{"prompt": "p", "model": "\ud800"}', "model"),
    ("/v1/completions", r'{"prompt": "p", "stop": "\ud800"}', "stop"),
    ("/v1/completions", r'{"prompt": "p", "stop": ["x", "\ud800"]}', "stop"),
    ("/v1/completions", r'{"prompt": "p", "suffix": "\ud800"}', "suffix"),
    ("/v1/chat/completions", r'{"messages": [{"role": "user", "content": "\ud800"}]}', "messages"),
    ("/v1/chat/completions", r'{"messages": [{"role": "\ud800", "content": "x"}]}', "messages"),
    (
        "/v1/chat/completions",
        r'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}',
        "messages",
    ),
    ("/v1/chat/completions", r'{"model": "\udfff", "messages": [{"role": "user", "content": "x"}]}', "model"),
]


async def post(stack, path: str, content: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as client:
        return await client.post(path, content=content, headers={"content-type": "application/json"})


def assert_bad_request(reply: httpx.Response, param: str) -> dict:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == 400 and error["type"] == "BadRequestError" and error["param"] == param, error
    assert error["message"].startswith(param), error
    return error


@pytest.mark.parametrize(("path", "body", "param"), OUT_OF_RANGE)
async def test_out_of_range_numbers_are_400_naming_the_field(stack, path, body, param):
    reply = await post(stack, path, json.dumps({"model": "fake-base", **body}).encode())
    assert_bad_request(reply, param)


@pytest.mark.parametrize(("path", "raw", "param"), SURROGATES)
async def test_unpaired_surrogates_are_400_naming_the_field(stack, path, raw, param):
    error = assert_bad_request(await post(stack, path, raw.encode()), param)
    assert "surrogate" in error["message"]


async def test_in_range_extremes_still_convert(openai_client):
    reply = await openai_client.completions.create(
        model="fake-base",
        prompt=[0, 2**31 - 1],
        max_tokens=2,
        seed=2**63 - 1,
        extra_body={"stop_token_ids": [2**31 - 1], "min_tokens": 0, "top_k": 2**31 - 1},
    )
    assert reply.usage.completion_tokens == 2


async def test_a_logit_bias_is_refused_by_name_not_ignored(stack):
    body = {"model": "fake-base", "prompt": "p", "logit_bias": {"7": -100}}
    error = assert_bad_request(await post(stack, "/v1/completions", json.dumps(body).encode()), "logit_bias")
    assert "not supported" in error["message"]
    empty = {"model": "fake-base", "prompt": "p", "max_tokens": 1, "logit_bias": {}}
    assert (await post(stack, "/v1/completions", json.dumps(empty).encode())).status_code == 200


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_n_over_max_n_is_400_naming_the_bound(openai_client, endpoint):
    n = DEFAULT_MAX_N + 1
    with pytest.raises(openai.BadRequestError) as info:
        if endpoint == "completions":
            await openai_client.completions.create(model="fake-base", prompt="p", max_tokens=1, n=n)
        else:
            await openai_client.chat.completions.create(model="fake-base", max_tokens=1, n=n, **CHAT)
    error = info.value.body
    assert error["param"] == "n" and f"at most {DEFAULT_MAX_N}" in error["message"]
    assert "--max-n" in error["message"]


async def test_n_at_max_n_is_served(openai_client):
    reply = await openai_client.completions.create(
        model="fake-base", prompt="p", max_tokens=1, n=DEFAULT_MAX_N
    )
    assert len(reply.choices) == DEFAULT_MAX_N
