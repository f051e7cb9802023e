"""The servicer and error mapping in process, over a real grpc.aio server, with a scripted fake engine:
message conversion, admission (RESOURCE_EXHAUSTED), cancellation and deadlines abort the request."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import grpc
import pytest
from worker_process import collect, generate_request

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference_worker import errors
from loraplane.inference_worker.outputs import CompletionOutput, Logprob, RequestOutput
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.service.control_client import error_code_for
from loraplane.inference_worker.service.convert import (
    check_fits,
    chunk_from_completion,
    prompt_logprobs_to_proto,
    sampling_params_from_proto,
)
from loraplane.inference_worker.service.interceptors import status_for
from loraplane.inference_worker.service.servicer import InferenceServicer
from loraplane.worker.v1 import worker_pb2 as wk
from tests.inference_worker.service.fake_engine import FakeEngine, serving


def completion(
    index: int, text: str, token_ids: list[int], finish: str | None = None, **kw
) -> CompletionOutput:
    """A snapshot whose delta is (text, token_ids); pass `all_ids` for the cumulative ids when they differ."""
    all_ids = kw.pop("all_ids", token_ids)
    return CompletionOutput(
        index, text, all_ids, finish_reason=finish, text_delta=text, token_ids_delta=token_ids, **kw
    )


@pytest.fixture
async def served():
    engine = FakeEngine()
    servicer = InferenceServicer(max_in_flight=2)
    async with serving(engine, servicer) as stub:
        yield engine, servicer, stub


def test_unset_sampling_fields_keep_engine_defaults():
    params = sampling_params_from_proto(pb.SamplingParams())
    assert dataclasses.replace(params, max_tokens=16) == SamplingParams()
    assert params.max_tokens is None  # unset: up to the context length, as the proto says


def test_set_sampling_fields_win_even_when_zero_and_floats_keep_their_decimal():
    msg = pb.SamplingParams(
        temperature=0, top_p=0.9, top_k=0, seed=7, stop=["\n"], stop_token_ids=[2], min_tokens=1
    )
    params = sampling_params_from_proto(msg)
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.0, 0.9, 0, 7)
    assert (params.stop_strings, params.stop_token_ids, params.min_tokens) == (["\n"], [2], 1)
    assert params.include_stop_str_in_output is False
    assert sampling_params_from_proto(
        pb.SamplingParams(stop=["\n"], include_stop_str_in_output=True)
    ).include_stop_str_in_output


def test_bad_sampling_fields_are_invalid_and_prompt_logprobs_pass_through():
    with pytest.raises(errors.InvalidRequestError, match="temperature"):
        sampling_params_from_proto(pb.SamplingParams(temperature=-0.5))
    with pytest.raises(errors.InvalidRequestError, match="prompt_logprobs"):
        sampling_params_from_proto(pb.SamplingParams(prompt_logprobs=-1))
    assert sampling_params_from_proto(pb.SamplingParams(prompt_logprobs=2)).prompt_logprobs == 2
    assert sampling_params_from_proto(pb.SamplingParams(prompt_logprobs=0)).prompt_logprobs == 0
    assert sampling_params_from_proto(pb.SamplingParams()).prompt_logprobs is None


class WordTokenizer:
    def decode(self, ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)


def test_prompt_logprobs_become_protos_with_a_nan_first_entry():
    entries = [None, {8: Logprob(-1.5, 3, "<8>"), 9: Logprob(-0.2, 1, "<9>")}]
    output = RequestOutput("r", None, [7, 8], [], False, prompt_logprobs=entries)
    first, second = prompt_logprobs_to_proto(output, WordTokenizer())
    assert (first.token_id, first.token, first.rank, len(first.top_logprobs)) == (7, "<7>", 0, 0)
    assert math.isnan(first.logprob)
    assert (second.token_id, second.token, second.rank) == (8, "<8>", 3)
    assert second.logprob == pytest.approx(-1.5) and [t.token_id for t in second.top_logprobs] == [9, 8]
    assert prompt_logprobs_to_proto(RequestOutput("r", None, [7, 8], [], False), None) == []


def test_chunk_carries_multibyte_text_logprobs_and_stop_reason():
    logprobs = [{5: Logprob(-0.1, 1, "é"), 6: Logprob(-2.5, 2, "e")}]
    chunk = chunk_from_completion(
        completion(1, "café 🙂", [5], "stop", logprobs=logprobs, stop_reason="\n"), True
    )
    assert (chunk.index, chunk.text, list(chunk.token_ids)) == (1, "café 🙂", [5])
    assert chunk.finish_reason == pb.FINISH_REASON_STOP and chunk.stop_reason == "\n"
    assert chunk.logprobs[0].logprob == pytest.approx(-0.1) and [
        t.token_id for t in chunk.logprobs[0].top_logprobs
    ] == [5, 6]
    assert chunk_from_completion(completion(0, "", []), False) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidRequestError("bad", "top_p"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFoundError("no model"), grpc.StatusCode.NOT_FOUND),
        (errors.AdapterNotFoundError("no adapter"), grpc.StatusCode.NOT_FOUND),
        (errors.AdapterAlreadyLoadedError("dup"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.AdapterSourceNotFoundError("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.AdapterLoadError("bad r"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.EngineOverloadedError("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.EngineDeadError("dead"), grpc.StatusCode.UNAVAILABLE),
        (KeyError("secret internals"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(error, code):
    mapped, message = status_for(error)
    assert mapped == code and ("secret" not in message)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.AdapterSourceNotFoundError("gone", field="source"), wk.COMMAND_ERROR_CODE_SOURCE_NOT_FOUND),
        (errors.AdapterLoadError("rank 64 > 16", field="r"), wk.COMMAND_ERROR_CODE_RANK_TOO_LARGE),
        (errors.AdapterLoadError("hash", field="version"), wk.COMMAND_ERROR_CODE_VERSION_MISMATCH),
        (errors.AdapterLoadError("DoRA", field="use_dora"), wk.COMMAND_ERROR_CODE_INVALID_ADAPTER),
        (errors.AdapterNotFoundError("x"), wk.COMMAND_ERROR_CODE_NOT_FOUND),
        (errors.InvalidRequestError("off", param="enable_lora"), wk.COMMAND_ERROR_CODE_CAPACITY),
        (RuntimeError("boom"), wk.COMMAND_ERROR_CODE_INTERNAL),
    ],
)
def test_command_error_codes(error, code):
    assert error_code_for(error) == code


async def test_n2_stream_sends_each_finish_once_then_usage(served):
    engine, _, stub = served
    engine.script = [
        RequestOutput("r", "p", [1, 2], [completion(0, "a", [3], "stop"), completion(1, "b", [4])], False),
        RequestOutput(
            "r",
            "p",
            [1, 2],
            [completion(0, "", [], "stop", all_ids=[3]), completion(1, "c", [5], "length", all_ids=[4, 5])],
            True,
        ),
    ]
    result = await collect(stub.Generate(generate_request("p", max_tokens=2, n=2)))
    assert result["texts"] == ["a", "bc"]
    assert result["finish"] == {0: pb.FINISH_REASON_STOP, 1: pb.FINISH_REASON_LENGTH}


async def test_queue_full_fails_fast_with_resource_exhausted(served):
    engine, servicer, stub = served
    engine.gate = asyncio.Event()
    engine.script = [RequestOutput("r", "p", [1], [completion(0, "x", [3], "stop")], True)]
    held = [stub.Generate(generate_request("p")) for _ in range(2)]
    while servicer.num_in_flight < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(generate_request("p")))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in info.value.details()
    engine.gate.set()
    assert [(await collect(call))["texts"] for call in held] == [["x"], ["x"]]


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_cancel_and_deadline_abort_the_engine_request(served, how):
    engine, servicer, stub = served
    engine.gate = asyncio.Event()  # never set: the request would run forever
    call = stub.Generate(generate_request("p"), timeout=0.5 if how == "deadline" else None)
    while servicer.num_in_flight < 1:
        await asyncio.sleep(0.01)
    if how == "cancel":
        call.cancel()
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
        await collect(call)
    for _ in range(100):
        if engine.aborted and servicer.num_in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.aborted and servicer.num_in_flight == 0


async def test_unexpected_engine_failure_is_internal_without_internals(served):
    engine, _, stub = served
    engine.failure = KeyError("secret internals")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(generate_request("p")))
    assert info.value.code() == grpc.StatusCode.INTERNAL and "secret" not in info.value.details()


async def test_not_ready_is_unavailable():
    servicer = InferenceServicer(max_in_flight=1)
    with pytest.raises(errors.EngineDeadError, match="loading"):
        await servicer.ListModels(pb.ListModelsRequest(), None)


async def test_draining_refuses_new_streams_with_unavailable_and_waits_for_admitted_ones(served):
    engine, servicer, stub = served
    engine.gate = asyncio.Event()
    engine.script = [RequestOutput("r", "p", [1], [completion(0, "x", [3], "stop")], True)]
    held = stub.Generate(generate_request("p"))
    while servicer.num_in_flight < 1:
        await asyncio.sleep(0.01)
    servicer.start_draining()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(generate_request("p")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in info.value.details()
    assert not await servicer.wait_drained(0.05)
    engine.gate.set()
    assert (await collect(held))["texts"] == ["x"]
    assert await servicer.wait_drained(5)


def test_prompt_plus_max_tokens_must_fit_the_context():
    check_fits([1] * 10, SamplingParams(max_tokens=6), 16)  # exactly fits
    check_fits([1] * 10, SamplingParams(max_tokens=None), 16)  # up to the context
    with pytest.raises(errors.InvalidRequestError, match=r"has 16 tokens.*max_model_len\) is 16") as info:
        check_fits([1] * 16, SamplingParams(max_tokens=None), 16)  # too long alone, before the engine
    assert info.value.param == "prompt"
    with pytest.raises(errors.InvalidRequestError, match=r"maximum context length is 16 tokens") as info:
        check_fits([1] * 10, SamplingParams(max_tokens=7), 16)
    assert info.value.param == "max_tokens" and "10 input tokens" in str(info.value)
