"""Tokenize of a chat with `add_special_tokens`, on the demo model's real tokenizer. Found by the fuzz
suite: transformers' fast tokenizers have no `build_inputs_with_special_tokens`, so every such request
failed with INTERNAL."""

from __future__ import annotations

import pytest

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference_worker.service.convert import tokenize_input

CHAT = pb.ChatInput(messages=[pb.ChatMessage(role="user", content="Hello there")])


@pytest.fixture(scope="module")
def tokenizer(demo_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_path)


@pytest.mark.parametrize("add_special_tokens", [None, False, True])
def test_chat_is_the_rendered_template_encoded_with_special_tokens_on_request(tokenizer, add_special_tokens):
    request = pb.TokenizeRequest(chat=CHAT)
    if add_special_tokens is not None:
        request.add_special_tokens = add_special_tokens
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    expected = tokenizer.encode(rendered, add_special_tokens=bool(add_special_tokens))
    assert tokenize_input(request, tokenizer) == expected


def test_an_empty_chat_message_with_special_tokens_tokenizes(tokenizer):
    request = pb.TokenizeRequest(chat=pb.ChatInput(messages=[pb.ChatMessage()]), add_special_tokens=True)
    assert tokenize_input(request, tokenizer)
