"""A fake Inference worker for gateway tests and the gateway benchmark: the real proto, instant tokens.

Semantics: serves base model `base_model` and the adapters in `adapters` (mutable set). A prompt's
tokens are its whitespace-separated words (chat: the messages' contents). Each choice generates words
from a small vocabulary with a generator seeded from (seed, model, choice), so a given seed always gives
the same text (a random seed when none is given and temperature > 0; seed 0 when temperature is 0).
Stop strings end a choice before the match; `max_tokens` ends it with "length" (unset: UNSET_MAX_TOKENS,
the fake's stand-in for a real worker's "up to the context length").
`token_delay_s` sleeps between tokens (to test streams that outlive a killed worker); `prefill_delay_s`
sleeps before the `start` message, as a real worker's prefill does (a real worker sends `start` with
its first token).

    python -m loraplane.gateway.testing --port 50061 [--adapters a,b] [--worker-id w0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from loraplane.grpc_options import server_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.tls import PLAINTEXT, TLSConfig, add_port

VOCAB = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda", "theta", "zeta")
SERVICE = "loraplane.inference.v1.Inference"
UNSET_MAX_TOKENS = 40


def _prompt_words(request: pb.GenerateRequest) -> list[str]:
    kind = request.WhichOneof("input")
    if kind == "text":
        return request.text.split() or [""]
    if kind == "token_ids":
        return [str(t) for t in request.token_ids.ids]
    return " ".join(m.content for m in request.chat.messages).split() or [""]


class FakeInference(inference_pb2_grpc.InferenceServicer):
    """The Inference servicer of the fake worker."""

    def __init__(self, base_model: str, adapters: set[str], token_delay_s: float = 0.0) -> None:
        self.base_model, self.adapters, self.token_delay_s = base_model, adapters, token_delay_s
        self.num_generate = 0
        self.prefill_delay_s = 0.0
        self.refuse_with: grpc.StatusCode | None = None  # set: every Generate fails with it before start

    def _check_model(self, model: str) -> None:
        if model and model != self.base_model and model not in self.adapters:
            raise LookupError(f"The model `{model}` does not exist.")

    async def Generate(self, request, context):
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, f"refused with {self.refuse_with.name}")
        try:
            self._check_model(request.model)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        params = request.sampling_params
        if params.HasField("temperature") and params.temperature < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "temperature must be >= 0, got a negative value"
            )
        self.num_generate += 1
        words = _prompt_words(request)
        prompt_ids = list(request.token_ids.ids) or list(range(len(words)))
        start = pb.GenerateStart(
            request_id=request.request_id, prompt_token_ids=prompt_ids, model=request.model
        )
        if params.HasField("prompt_logprobs"):
            start.prompt_logprobs.extend(pb.TokenLogprob(token_id=i, token=w) for i, w in enumerate(words))
        await asyncio.sleep(self.prefill_delay_s)
        yield pb.GenerateResponse(start=start)
        n = params.n if params.HasField("n") else 1
        completion_tokens = 0
        for index in range(n):
            async for chunk in self._choice(request, index):
                completion_tokens += len(chunk.token_ids)
                yield pb.GenerateResponse(chunk=chunk)
        usage = pb.Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        yield pb.GenerateResponse(usage=usage)

    async def _choice(self, request: pb.GenerateRequest, index: int):
        params = request.sampling_params
        seed = params.seed if params.HasField("seed") else None
        if seed is None and params.HasField("temperature") and params.temperature == 0:
            seed = 0
        rng = random.Random(f"{seed}:{request.model}:{index}" if seed is not None else None)
        max_tokens = params.max_tokens if params.HasField("max_tokens") else UNSET_MAX_TOKENS
        text = ""
        for position in range(max_tokens):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            token_id = rng.randrange(len(VOCAB))
            piece = f" {VOCAB[token_id]}"
            hit = next((s for s in params.stop if s in text + piece), None)
            last = position == max_tokens - 1
            chunk = pb.GenerateChunk(index=index, token_ids=[token_id], text=piece)
            if params.HasField("logprobs"):
                top = [pb.TopLogprob(token_id=token_id, token=piece, logprob=-0.5, rank=1)][: params.logprobs]
                chunk.logprobs.append(
                    pb.TokenLogprob(token_id=token_id, token=piece, logprob=-0.5, top_logprobs=top)
                )
            if hit is not None:
                chunk.text = (text + piece).split(hit, 1)[0][len(text) :]
                chunk.finish_reason, chunk.stop_reason = pb.FINISH_REASON_STOP, hit
                yield chunk
                return
            text += piece
            if last:
                chunk.finish_reason = pb.FINISH_REASON_LENGTH
            yield chunk

    async def ListModels(self, request, context):
        cards = [pb.ModelCard(id=self.base_model, root=f"/models/{self.base_model}", max_model_len=2048)]
        cards += [
            pb.ModelCard(id=a, parent=self.base_model, root=f"/adapters/{a}") for a in sorted(self.adapters)
        ]
        return pb.ListModelsResponse(models=cards)

    async def Tokenize(self, request, context):
        words = request.text.split() or [m.content for m in request.chat.messages]
        strs = words if request.return_token_strs else []
        return pb.TokenizeResponse(
            token_ids=range(len(words)), count=len(words), max_model_len=2048, token_strs=strs
        )

    async def Detokenize(self, request, context):
        return pb.DetokenizeResponse(text=" ".join(f"w{i}" for i in request.token_ids))


async def start_fake_worker(
    port: int = 0,
    base_model: str = "fake-base",
    adapters: set[str] | None = None,
    token_delay_s: float = 0.0,
    host: str = "127.0.0.1",
    tls: TLSConfig = PLAINTEXT,
) -> tuple[grpc.aio.Server, FakeInference, int]:
    """Start a fake worker on `host:port` (0 = any free port; TLS per `tls`, as a real worker's
    --tls-* flags); returns (server, servicer, bound port)."""
    server = grpc.aio.server(options=server_options())
    servicer = FakeInference(base_model, set(adapters or ()), token_delay_s)
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = add_port(server, f"{host}:{port}", tls)
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, servicer, bound


async def _serve(args: argparse.Namespace) -> None:
    adapters = {a for a in args.adapters.split(",") if a}
    server, _, port = await start_fake_worker(args.port, args.base_model, adapters, args.token_delay_s)
    logging.getLogger(__name__).info("fake worker listening on 127.0.0.1:%d", port)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a fake Inference worker that streams instantly.")
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--base-model", default="fake-base")
    parser.add_argument("--adapters", default="")
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
