import pytest

from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"n": 0}, "n"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"logprobs": 99}, "logprobs"),
        ({"stop": ["ok", ""]}, "stop"),
    ],
)
def test_invalid_values_name_the_param(kwargs, param):
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
    assert param in str(info.value)


def test_defaults_and_normalisation():
    p = SamplingParams(stop="###", top_k=0)
    assert p.stop_strings == ["###"]
    assert p.stop_token_ids == []
    assert p.effective_top_k == 0
    assert SamplingParams(top_k=-1).effective_top_k == 0
    assert SamplingParams(temperature=0).is_greedy
    assert not SamplingParams().needs_penalties
    assert SamplingParams(repetition_penalty=1.2).needs_penalties
