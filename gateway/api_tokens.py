"""vLLM's utility routes: POST /tokenize, POST /detokenize, GET /version, GET and POST /ping.

Semantics: /tokenize takes vLLM's two bodies: `prompt` (text; `add_special_tokens` default true) or
`messages` (rendered with the chat template; `add_generation_prompt` default true, `add_special_tokens`
default false), and answers `{"count", "max_model_len", "tokens", "token_strs"}` (`token_strs` only with
`return_token_strs`, else null). /detokenize takes `tokens` and answers `{"prompt": text}`. Both run on a
worker serving `model` (any worker for the base model), through the worker's Tokenize and Detokenize
RPCs; a worker that is unavailable is skipped for the next. Chat options the worker cannot honour
(`tools`, `chat_template`, `chat_template_kwargs`, `continue_final_message`, `mm_processor_kwargs`) are
400s naming them. /ping answers 200 with an empty body while the gateway runs (vLLM's liveness probe);
/version is `{"version": <loraplane's version>}`. /health (in app.py) says whether any worker serves.
"""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from loraplane import __version__
from loraplane.gateway.convert import _message_text
from loraplane.gateway.errors import OpenAIError, bad_request, from_grpc
from loraplane.gateway.generation import MAX_ATTEMPTS, _pick
from loraplane.gateway.protocol import ChatMessageIn, Text, TokenId
from loraplane.inference.v1 import inference_pb2 as pb

router = APIRouter()
CHAT_OPTIONS_REFUSED = (
    "tools",
    "chat_template",
    "chat_template_kwargs",
    "continue_final_message",
    "mm_processor_kwargs",
)


class TokenizeRequest(BaseModel):
    """vLLM's TokenizeCompletionRequest and TokenizeChatRequest in one body: `prompt` xor `messages`."""

    model_config = ConfigDict(extra="allow")
    model: Text | None = None
    prompt: Text | None = None
    messages: list[ChatMessageIn] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Text | None = None
    tokens: list[TokenId] = Field(min_length=1)


def _tokenize_message(body: TokenizeRequest) -> pb.TokenizeRequest:
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("send either prompt (text) or messages (a chat), not both nor neither", "prompt")
    message = pb.TokenizeRequest(model=body.model or "", return_token_strs=bool(body.return_token_strs))
    if body.add_special_tokens is not None:
        message.add_special_tokens = body.add_special_tokens
    if body.prompt is not None:
        message.text = body.prompt
        return message
    extras = body.model_extra or {}
    for name in CHAT_OPTIONS_REFUSED:
        if extras.get(name) not in (None, False, [], {}):
            raise bad_request(f"{name} is not supported by /tokenize yet; send the request without it", name)
    messages = [
        pb.ChatMessage(role=m.role, content=_message_text(m.content, i)) for i, m in enumerate(body.messages)
    ]
    message.chat.CopyFrom(pb.ChatInput(messages=messages, add_generation_prompt=body.add_generation_prompt))
    return message


async def _unary(request: Request, method: str, message: Any) -> Any:
    """`method` (Tokenize or Detokenize) on a worker serving `message.model`, skipping unavailable ones."""
    pool = request.app.state.gateway.pool
    exclude: set[str] = set()
    while True:
        worker = await _pick(pool, message.model, exclude)
        try:
            return await getattr(worker.stub, method)(message, timeout=pool.config.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise from_grpc(exc) from exc
            pool.mark_down(worker)
            exclude.add(worker.worker_id)
            if len(exclude) >= min(MAX_ATTEMPTS, len(pool.workers)):
                raise OpenAIError(503, "no inference worker could take the request right now; retry") from exc


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    reply = await _unary(request, "Tokenize", _tokenize_message(body))
    tokens = list(reply.token_ids)
    return JSONResponse(
        {
            "count": reply.count,
            "max_model_len": reply.max_model_len,
            "tokens": tokens,
            "token_strs": list(reply.token_strs) if body.return_token_strs else None,
        }
    )


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> JSONResponse:
    message = pb.DetokenizeRequest(model=body.model or "", token_ids=body.tokens)
    reply = await _unary(request, "Detokenize", message)
    return JSONResponse({"prompt": reply.text})


@router.api_route("/ping", methods=["GET", "POST"])
async def ping() -> Response:
    return Response(status_code=200)


@router.get("/version")
async def version() -> JSONResponse:
    return JSONResponse({"version": __version__})
