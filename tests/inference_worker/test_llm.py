"""The offline LLM API: request validation, stopping rules, n > 1, seeds, chat, loader errors."""

from __future__ import annotations

import json

import pytest

from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.errors import InvalidRequestError, ModelLoadError
from tests.inference_worker.conftest import make_llm

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


@pytest.mark.parametrize(
    ("make_request", "param"),
    [
        (lambda: (["word " * 300], GREEDY), "prompt"),
        (lambda: ([""], GREEDY), "prompt"),
        (lambda: ([[1, 2, 10**9]], GREEDY), "prompt"),
        (lambda: (["hi"], SamplingParams(max_tokens=0)), "max_tokens"),
        (lambda: (["hi"], SamplingParams(temperature=-1.0)), "temperature"),
        (lambda: (["hi"], SamplingParams(top_p=0.0)), "top_p"),
        (lambda: (["hi"], SamplingParams(top_p=1.01)), "top_p"),
    ],
)
def test_bad_requests_raise_and_engine_keeps_serving(tiny_llama_llm, make_request, param):
    with pytest.raises(InvalidRequestError) as info:
        prompts, params = make_request()
        tiny_llama_llm.generate(["a fine prompt", *prompts], params)
    assert info.value.param == param
    assert not tiny_llama_llm.engine.has_unfinished_requests()
    out = tiny_llama_llm.generate(["still serving"], GREEDY)[0]
    assert len(out.outputs[0].token_ids) == 8 and out.outputs[0].finish_reason == "length"


def test_lora_request_without_enable_lora_is_rejected(tiny_llama_llm):
    with pytest.raises(InvalidRequestError) as info:
        tiny_llama_llm.generate(["hi"], GREEDY, lora_request=object())
    assert info.value.param == "lora_request"


@pytest.mark.parametrize("model", ["/no/such/model", "not-a-hub-id-or-path"])
def test_unknown_model_path(model):
    with pytest.raises(ModelLoadError, match="no such model"):
        LLM(model, device="cpu")


def test_folders_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        LLM(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(ModelLoadError, match="no weight files"):
        LLM(str(tmp_path), device="cpu")


def test_dummy_load_needs_only_a_config(tiny_llama_path, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((__import__("pathlib").Path(tiny_llama_path) / name).read_bytes())
    llm = make_llm(str(tmp_path), load_format="dummy")
    assert len(llm.generate(["x"], GREEDY)[0].outputs[0].token_ids) == 8


def test_stop_token_ids_and_stop_strings(tiny_llama_llm):
    base = tiny_llama_llm.generate(["Once upon a time"], SamplingParams(temperature=0, max_tokens=12))[
        0
    ].outputs[0]
    stop_id = base.token_ids[4]
    first = base.token_ids.index(stop_id)
    out = tiny_llama_llm.generate(
        ["Once upon a time"], SamplingParams(temperature=0, stop_token_ids=[stop_id])
    )
    c = out[0].outputs[0]
    assert (
        c.token_ids == base.token_ids[: first + 1] and c.finish_reason == "stop" and c.stop_reason == stop_id
    )
    stop_text = base.text[len(base.text) // 2 : len(base.text) // 2 + 3]
    if stop_text.strip():
        c = tiny_llama_llm.generate(["Once upon a time"], SamplingParams(temperature=0, stop=[stop_text]))[
            0
        ].outputs[0]
        assert c.finish_reason == "stop" and c.stop_reason == stop_text
        assert stop_text not in c.text and base.text.startswith(c.text)


def test_include_stop_str_in_output_keeps_the_stop_string(tiny_llama_llm):
    prompt, greedy = ["Once upon a time"], {"temperature": 0, "ignore_eos": True}
    base = tiny_llama_llm.generate(prompt, SamplingParams(max_tokens=12, **greedy))[0].outputs[0]
    stop_text = next(base.text[i : i + 3] for i in range(2, len(base.text)) if base.text[i : i + 3].strip())
    cut = base.text.index(stop_text)
    params = SamplingParams(stop=[stop_text], include_stop_str_in_output=True, **greedy)
    c = tiny_llama_llm.generate(prompt, params)[0].outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == stop_text
    assert c.text == base.text[: cut + len(stop_text)]
    without = tiny_llama_llm.generate(prompt, SamplingParams(stop=[stop_text], **greedy))[0].outputs[0]
    assert without.text == base.text[:cut]


def test_n_and_seed_reproduce(tiny_llama_llm):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8)
    first = tiny_llama_llm.generate(["Tell me"], params)[0]
    second = tiny_llama_llm.generate(["Tell me", "other traffic in the batch"], [params, SamplingParams()])[0]
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in second.outputs]
    assert len({tuple(c.token_ids) for c in first.outputs}) > 1
    assert [c.index for c in first.outputs] == [0, 1, 2]


def test_seeded_choices_differ_and_never_replay_another_seed(tiny_llama_llm):
    """Regression: n=2 with a seed on a chat request (temperature 0.5) gave identical choices; each
    choice's generator comes from (seed, index), not seed + index, so no choice replays another seed."""
    messages = [{"role": "user", "content": "Write a line about the sea."}]

    def choices(seed: int) -> list[list[int]]:
        params = SamplingParams(n=2, temperature=0.5, seed=seed, max_tokens=12, ignore_eos=True)
        return [c.token_ids for c in tiny_llama_llm.chat(messages, params)[0].outputs]

    first, again, next_seed = choices(3), choices(3), choices(4)
    assert first == again
    assert first[0] != first[1]
    assert first[1] != next_seed[0]


def test_ignore_eos_runs_to_max_tokens(tiny_llama_llm):
    out = tiny_llama_llm.generate([[5, 6, 7]], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[
        0
    ]
    assert len(out.outputs[0].token_ids) == 20 and out.prompt_token_ids == [5, 6, 7]


def test_chat_applies_the_template(smol_llm):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    out = smol_llm.chat(messages, SamplingParams(temperature=0, max_tokens=8))[0]
    expected = smol_llm.get_tokenizer().apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert out.prompt_token_ids == list(expected)
    assert out.outputs[0].text
