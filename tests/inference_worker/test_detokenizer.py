from __future__ import annotations

import pytest

from loraplane.inference_worker.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(demo_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_path)


def stream(tokenizer, text: str, stop=(), include_stop: bool = False):
    prompt = tokenizer.encode("Say:")
    detok = IncrementalDetokenizer(tokenizer, prompt, True, list(stop), include_stop)
    seen, found = [], None
    for token in tokenizer.encode(text):
        found = detok.add_token(token)
        seen.append(detok.visible_text(finished=found is not None))
        if found:
            break
    return detok, seen, found


@pytest.mark.parametrize(
    "text", ["Hello, world! How are you?", " naïve café 日本語 🤖🎉 done", "x\n\n  y\tz"]
)
def test_incremental_text_equals_full_decode_and_never_breaks_utf8(tokenizer, text):
    detok, seen, _ = stream(tokenizer, text)
    assert detok.text == tokenizer.decode(tokenizer.encode(text))
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert later.startswith(earlier)
    assert all("\ufffd" not in s for s in seen)


def test_stop_string_across_tokens_is_not_emitted(tokenizer):
    detok, seen, found = stream(tokenizer, "The answer is 42. END of the story", stop=["END of"])
    assert found == "END of"
    assert detok.text == "The answer is 42. "
    assert all("END" not in s for s in seen)


def test_include_stop_str_keeps_the_stop_string_and_drops_what_follows(tokenizer):
    detok, seen, found = stream(tokenizer, "The answer is 42. END of the story", ["END of"], True)
    assert found == "END of"
    assert detok.text == "The answer is 42. END of"
    assert seen[-1] == detok.text and all(
        later.startswith(s) for s, later in zip(seen, seen[1:], strict=False)
    )


def test_earliest_stop_string_wins(tokenizer):
    detok, _, found = stream(tokenizer, "alpha beta gamma", stop=["gamma", "beta"])
    assert found == "beta" and detok.text == "alpha "


def test_held_back_tail_is_released_when_finished(tokenizer):
    detok, seen, found = stream(tokenizer, "abc EN", stop=["END"])
    assert found is None
    assert not seen[-1].endswith("EN")
    assert detok.visible_text(finished=True) == detok.text
