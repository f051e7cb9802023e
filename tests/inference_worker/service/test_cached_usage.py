"""usage.prompt_tokens_details.cached_tokens on a prefix-cache hit, in streamed and non-streamed responses
alike: the engine's count (tiny Llama, a prompt repeated), the worker's Usage, the gateway's JSON."""

from __future__ import annotations

from loraplane.gateway.responses import ChatFormatter, CompletionFormatter
from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.service.convert import usage_from_output

PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark forest tonight"


def test_a_repeated_prompt_reports_its_cached_tokens_in_every_response_shape(tiny_llama_llm):
    params = SamplingParams(temperature=0, max_tokens=2)
    tiny_llama_llm.generate([PROMPT], params)
    again = tiny_llama_llm.generate([PROMPT], params)[0]  # the prompt's full blocks are cached by now
    usage = usage_from_output(again)
    assert 0 < usage.cached_prompt_tokens < usage.prompt_tokens
    for formatter in (CompletionFormatter("c", "m", 1, False, False), ChatFormatter("c", "m", 1, False)):
        formatter.usages.append(usage)
        expected = {"cached_tokens": usage.cached_prompt_tokens}
        assert formatter.final()["usage"]["prompt_tokens_details"] == expected
        assert formatter.usage_chunk()["usage"]["prompt_tokens_details"] == expected
