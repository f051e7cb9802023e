"""Stream messages -> OpenAI logprobs JSON."""

from __future__ import annotations

import math

from loraplane.gateway.responses import completion_logprobs
from loraplane.inference.v1 import inference_pb2 as pb


def test_echoed_first_prompt_token_has_null_logprobs():
    entries = [
        pb.TokenLogprob(token_id=1, token="Hi", logprob=math.nan, rank=0),
        pb.TokenLogprob(
            token_id=2,
            token=" there",
            logprob=-1.25,
            rank=2,
            top_logprobs=[pb.TopLogprob(token_id=3, token="!", logprob=-0.5, rank=1)],
        ),
    ]
    out = completion_logprobs(entries)
    assert out["tokens"] == ["Hi", " there"] and out["text_offset"] == [0, 2]
    assert out["token_logprobs"] == [None, -1.25]
    assert out["top_logprobs"] == [None, {"!": -0.5}]
