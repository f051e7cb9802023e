"""Request bodies of the OpenAI-compatible endpoints (OpenAI fields plus vLLM's sampling extras).

Unknown fields are accepted and ignored, as OpenAI clients send many (`user`, `metadata`, ...).

Semantics: every value that becomes a protobuf field is checked here against that field's type, so a
body that fits the schema always converts: integers against int32/int64 (`Int32`, `Int64`; token ids
`TokenId`, never negative), floats finite and within float32 (`Float32`), and strings encodable as
UTF-8 (`Text`: JSON may carry an unpaired UTF-16 surrogate such as "\\ud800", which protobuf cannot
encode). A value out of range is a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38


def _utf8(value: str) -> str:
    """`value` unchanged when it encodes as UTF-8; otherwise a ValueError saying where it does not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate at character {exc.start}; send valid Unicode text"
        ) from None
    return value


def _text_or_list(value: object) -> str:
    return "list" if isinstance(value, list) else "text"


def _prompt_kind(value: object) -> str:
    """Which form of prompt `value` is, so a bad prompt is reported against that form only."""
    if not isinstance(value, list) or not value:
        return _text_or_list(value)
    return {int: "token_ids", list: "token_id_lists"}.get(type(value[0]), "list")


Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]
TokenId = NonNegativeInt32
Float32 = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Text = Annotated[str, AfterValidator(_utf8)]
TextOrList = Annotated[
    Annotated[Text, Tag("text")] | Annotated[list[Text], Tag("list")],
    Discriminator(_text_or_list),
]
Prompt = Annotated[
    Annotated[Text, Tag("text")]
    | Annotated[list[Text], Tag("list")]
    | Annotated[list[TokenId], Tag("token_ids")]
    | Annotated[list[list[TokenId]], Tag("token_id_lists")],
    Discriminator(_prompt_kind),
]


def _refuse_logit_bias(bias: dict[int, float] | None) -> dict[int, float] | None:
    if bias:
        raise ValueError("logit_bias is not supported by this server yet; send the request without it")
    return bias


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by completions and chat completions; names follow vLLM's SamplingParams.

    `logit_bias` is range-checked (token id keys, OpenAI's [-100, 100] values), and a non-empty one is
    refused by name: the engine cannot apply it yet, and a bias silently dropped would change outputs."""

    model_config = ConfigDict(extra="allow")

    model: Text | None = None
    n: PositiveInt32 = 1
    max_tokens: Int32 | None = None
    temperature: Float32 | None = None
    top_p: Float32 | None = None
    top_k: Int32 | None = None
    min_p: Float32 | None = None
    seed: Int64 | None = None
    stop: TextOrList | None = None
    stop_token_ids: list[TokenId] | None = None
    presence_penalty: Float32 | None = None
    frequency_penalty: Float32 | None = None
    repetition_penalty: Float32 | None = None
    logit_bias: Annotated[
        dict[TokenId, Annotated[float, Field(allow_inf_nan=False, ge=-100, le=100)]] | None,
        AfterValidator(_refuse_logit_bias),
    ] = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    min_tokens: Int32 | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    """POST /v1/completions. `max_tokens` defaults to 16 as in OpenAI's and vLLM's completions API (an
    explicit null means up to the context length); chat leaves it unset: up to the context length."""

    prompt: Prompt
    max_tokens: Int32 | None = 16
    echo: bool = False
    logprobs: NonNegativeInt32 | None = None
    prompt_logprobs: NonNegativeInt32 | None = None
    suffix: Text | None = None


class ContentPart(BaseModel):
    """One part of a chat message's content; only `type: "text"` parts are served."""

    model_config = ConfigDict(extra="allow")
    type: Text | None = None
    text: Text = ""


Content = Annotated[
    Annotated[Text, Tag("text")] | Annotated[list[ContentPart], Tag("list")],
    Discriminator(_text_or_list),
]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Text
    content: Content | None = None


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Int32 | None = None
    logprobs: bool = False
    top_logprobs: NonNegativeInt32 | None = None
    add_generation_prompt: bool = True


class LoadLoRAAdapterRequest(BaseModel):
    """POST /v1/load_lora_adapter, vLLM's body (`base_model_name` sets the adapter's parent)."""

    model_config = ConfigDict(extra="allow")
    lora_name: Text
    lora_path: Text
    base_model_name: Text | None = None
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    """POST /v1/unload_lora_adapter, vLLM's body (`lora_int_id` is accepted and unused, as in vLLM)."""

    model_config = ConfigDict(extra="allow")
    lora_name: Text
    lora_int_id: int | None = None


FinishReason = Literal["stop", "length", "abort"] | None
