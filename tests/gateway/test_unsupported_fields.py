"""Nothing silently ignored: fields the server cannot honour yet are 400s naming them; their neutral values
and harmless extras pass; chat top_logprobs=0 means no alternatives. Against fake workers on loopback."""

from __future__ import annotations

import httpx
import pytest

from loraplane.gateway.responses import chat_logprobs, prompt_logprobs_json
from loraplane.inference.v1 import inference_pb2 as pb

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = {"model": "fake-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "fake-base", "prompt": "a b", "max_tokens": 2}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

REFUSED = [
    ("response_format", {"type": "json_object"}),
    ("response_format", SCHEMA),
    ("tools", [TOOL]),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
    ("guided_json", {"type": "object"}),
    ("guided_regex", "[a-z]+"),
    ("guided_choice", ["a", "b"]),
    ("guided_grammar", "root ::= 'a'"),
    ("structured_outputs", {"json": {"type": "object"}}),
    ("use_beam_search", True),
    ("allowed_token_ids", [1, 2]),
    ("bad_words", ["x"]),
    ("truncate_prompt_tokens", 4),
    ("priority", 3),
    ("return_tokens_as_token_ids", True),
    ("spaces_between_special_tokens", False),
    ("cache_salt", "s"),
]
ACCEPTED = [
    ("user", "someone"),
    ("metadata", {"k": "v"}),
    ("store", False),
    ("response_format", {"type": "text"}),
    ("tool_choice", "none"),
    ("tool_choice", "auto"),
    ("tools", []),
    ("parallel_tool_calls", True),
    ("use_beam_search", False),
    ("guided_json", None),
    ("spaces_between_special_tokens", True),
]


async def _post(stack, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.gateway.url, timeout=30) as client:
        return await client.post(path, json=body)


@pytest.mark.parametrize(("path", "base"), [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize(("name", "value"), REFUSED)
async def test_fields_not_built_yet_are_refused_by_name(stack, path, base, name, value):
    reply = await _post(stack, path, {**base, name: value})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert name in error["message"] and "not supported" in error["message"] and error["param"] == name


@pytest.mark.parametrize(("path", "base"), [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize(("name", "value"), ACCEPTED)
async def test_neutral_values_and_harmless_extras_are_served(stack, path, base, name, value):
    reply = await _post(stack, path, {**base, name: value})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"prompt_logprobs": 1}, "prompt_logprobs"),
        ("/v1/chat/completions", {"echo": True}, "echo"),
        ("/v1/chat/completions", {"chat_template": "{{ x }}"}, "chat_template"),
        ("/v1/chat/completions", {"continue_final_message": True}, "continue_final_message"),
        ("/v1/completions", {"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
        ("/v1/completions", {"prompt_logprobs": 1, "echo": True}, "prompt_logprobs"),
        ("/v1/completions", {"best_of": 3}, "best_of"),
        (
            "/v1/completions",
            {"stream": True, "stream_options": {"continuous_usage_stats": True}},
            "stream_options",
        ),
    ],
)
async def test_route_specific_fields_are_refused_by_name(stack, path, extra, param):
    reply = await _post(stack, path, {**(CHAT if "chat" in path else COMPLETION), **extra})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


async def test_best_of_equal_to_n_is_plain_sampling(stack):
    assert (await _post(stack, "/v1/completions", {**COMPLETION, "best_of": 2, "n": 2})).status_code == 200


async def test_a_tool_call_in_the_history_is_refused(stack):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "user", "content": "x"},
    ]
    reply = await _post(stack, "/v1/chat/completions", {**CHAT, "messages": messages})
    assert reply.status_code == 400 and "messages[0].tool_calls" in reply.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_stream_options_without_stream_is_refused_as_vllm_does(stack, path):
    body = {**(CHAT if "chat" in path else COMPLETION), "stream_options": {"include_usage": True}}
    reply = await _post(stack, path, body)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "Stream options can only be defined when `stream=True`."


async def test_chat_top_logprobs_zero_means_no_alternatives():
    # the worker sends the top alternatives by rank, then the sampled token when it is not among them
    top = [pb.TopLogprob(token="a", logprob=-0.1, rank=1), pb.TopLogprob(token="b", logprob=-2.0, rank=2)]
    entries = [pb.TokenLogprob(token="b", logprob=-2.0, rank=2, top_logprobs=top)]
    assert chat_logprobs(entries, 0)["content"][0]["top_logprobs"] == []
    assert [t["token"] for t in chat_logprobs(entries, 1)["content"][0]["top_logprobs"]] == ["a"]
    assert len(chat_logprobs(entries)["content"][0]["top_logprobs"]) == 2


async def test_chat_logprobs_without_top_logprobs_carry_no_alternatives(stack):
    reply = await _post(stack, "/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 0})
    content = reply.json()["choices"][0]["logprobs"]["content"]
    assert content and all(entry["top_logprobs"] == [] for entry in content)


async def test_completion_choices_carry_prompt_logprobs_as_vllm_shapes_them(stack):
    reply = await _post(
        stack, "/v1/completions", {**COMPLETION, "prompt": "a b c", "prompt_logprobs": 0, "n": 2}
    )
    choices = reply.json()["choices"]
    expected = [None, {"1": {"logprob": 0.0, "rank": 0, "decoded_token": "b"}}]
    expected.append({"2": {"logprob": 0.0, "rank": 0, "decoded_token": "c"}})
    assert [c["prompt_logprobs"] for c in choices] == [expected, expected]
    plain = await _post(stack, "/v1/completions", COMPLETION)
    assert "prompt_logprobs" not in plain.json()["choices"][0]


async def test_prompt_logprobs_hold_the_token_and_its_alternatives():
    top = [pb.TopLogprob(token_id=5, token="x", logprob=-0.5, rank=1)]
    entries = [
        pb.TokenLogprob(token_id=1, token="a", logprob=float("nan")),
        pb.TokenLogprob(token_id=2, token="b", logprob=-3.0, rank=4, top_logprobs=top),
    ]
    assert prompt_logprobs_json(entries) == [
        None,
        {
            5: {"logprob": -0.5, "rank": 1, "decoded_token": "x"},
            2: {"logprob": -3.0, "rank": 4, "decoded_token": "b"},
        },
    ]
