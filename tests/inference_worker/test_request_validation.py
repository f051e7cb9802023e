"""No request can kill the engine: every field is checked against the model before admission, and an
error while one request's outputs are processed fails that request alone."""

from __future__ import annotations

import pytest

from loraplane.inference_worker import AsyncLLMEngine, SamplingParams
from loraplane.inference_worker.errors import InvalidRequestError, RequestFailedError

VOCAB = 49152  # the tiny models' vocab_size (conftest)
GREEDY = dict(temperature=0, max_tokens=4)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        (dict(stop_token_ids=[VOCAB], min_tokens=1), "stop_token_ids"),  # D1: IndexError in the step
        (dict(stop_token_ids=[-1], min_tokens=2), "stop_token_ids"),
        (dict(stop_token_ids=[10**30]), "stop_token_ids"),
        (dict(n=10_000), "n"),  # D12: above max_num_seqs
    ],
)
def test_out_of_range_fields_are_refused_and_the_engine_serves_on(tiny_llama_llm, kwargs, param):
    engine = tiny_llama_llm.engine
    with pytest.raises(InvalidRequestError) as info:
        tiny_llama_llm.generate(["Hello"], SamplingParams(**kwargs))
    assert info.value.param == param and param in str(info.value)
    assert str(VOCAB if param == "stop_token_ids" else engine.config.max_num_seqs) in str(info.value)
    assert not engine.has_unfinished_requests()
    out = tiny_llama_llm.generate(["Hello"], SamplingParams(**GREEDY))[0]
    assert out.finished and len(out.outputs[0].token_ids) == 4


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([VOCAB], f"[0, {VOCAB})"), ([-5, 3], f"[0, {VOCAB})"), ([1] * 300, "max_model_len")],
)
def test_prompt_ids_and_length_are_checked(tiny_llama_llm, prompt, message):
    with pytest.raises(InvalidRequestError, match=message.replace("[", r"\[").replace(")", r"\)")) as info:
        tiny_llama_llm.generate([prompt], SamplingParams(**GREEDY))
    assert info.value.param == "prompt"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        (dict(logprobs=2.5), "logprobs"),
        (dict(top_k=1.5), "top_k"),
        (dict(n=True), "n"),
        (dict(seed="7"), "seed"),
        (dict(stop_token_ids=["7"]), "stop_token_ids"),
        (dict(stop=[7]), "stop"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(kwargs, param):
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param


def test_a_failure_in_one_requests_outputs_fails_it_alone(tiny_llama_llm, monkeypatch):
    engine = tiny_llama_llm.engine
    real_append = engine.output_processor.append

    def append(seq, detok, result, i):
        if seq.request_id == "bad":
            raise RuntimeError("detokenizer exploded")
        real_append(seq, detok, result, i)

    monkeypatch.setattr(engine.output_processor, "append", append)
    engine.add_request("bad", "Hello", SamplingParams(n=2, **GREEDY))
    engine.add_request("good", "Hello", SamplingParams(**GREEDY))
    finished = {}
    while engine.has_unfinished_requests():
        finished.update((out.request_id, out) for out in engine.step() if out.finished)
    assert set(finished) == {"good"} and len(finished["good"].outputs[0].token_ids) == 4
    failures = engine.take_failures()
    assert [f.request_id for f in failures] == ["bad"]
    assert isinstance(failures[0].error, RequestFailedError)
    assert "detokenizer exploded" not in str(failures[0].error)  # internal text stays in the log
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


async def test_a_failed_request_ends_its_stream_with_an_error_and_others_continue(tiny_llama_path):
    engine = AsyncLLMEngine.from_kwargs(
        model=tiny_llama_path, device="cpu", dtype="float32", cpu_kv_cache_gb=0.05
    )
    await engine.start()
    try:
        processor = engine.engine.output_processor
        real_append = processor.append

        def append(seq, detok, result, i):
            if seq.request_id == "bad":
                raise RuntimeError("boom")
            real_append(seq, detok, result, i)

        processor.append = append
        with pytest.raises(RequestFailedError):
            async for _ in engine.generate("Hello", SamplingParams(**GREEDY), "bad"):
                pass
        outs = [out async for out in engine.generate("Hello", SamplingParams(**GREEDY), "good")]
        assert outs[-1].finished and engine.is_running
    finally:
        await engine.shutdown()


def test_offline_generate_raises_a_failed_request_and_the_engine_serves_on(tiny_llama_llm, monkeypatch):
    engine = tiny_llama_llm.engine
    real_append = engine.output_processor.append

    def append(seq, detok, result, i):
        if seq.num_output_tokens == 2:
            raise RuntimeError("stop check exploded")
        real_append(seq, detok, result, i)

    monkeypatch.setattr(engine.output_processor, "append", append)
    with pytest.raises(RequestFailedError):
        tiny_llama_llm.generate(["Hello", "Hi"], SamplingParams(**GREEDY))
    monkeypatch.undo()
    assert not engine.has_unfinished_requests()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert len(tiny_llama_llm.generate(["Hello"], SamplingParams(**GREEDY))[0].outputs[0].token_ids) == 4
