"""What one generation request did, read off its Generate streams: the request log lines and span
attributes of the gateway and the worker come from here.

Semantics: a `RequestRecord` starts when the request arrives (`arrival`). `on_request` notes the sampling
parameters and requested model, `on_message` every Generate response: `start` gives the prompt's tokens
and the serving model, chunks the generated tokens and finish reasons, `usage` the cached prompt tokens.
Times: TTFT is arrival to the first chunk with tokens (queueing and prefill included), decode is first
to last token, total is arrival to `finish()`. The prompt's text never enters a record.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from loraplane import tracing
from loraplane.inference.v1 import inference_pb2 as pb

MAX_PARAMS_CHARS = 300
FINISH_REASON_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
}


def params_summary(params: pb.SamplingParams) -> str:
    """The sampling parameters that were set, on one line, cut at MAX_PARAMS_CHARS."""
    text = " ".join(f"{field.name}={_value(value)}" for field, value in params.ListFields())
    return text if len(text) <= MAX_PARAMS_CHARS else text[: MAX_PARAMS_CHARS - 3] + "..."


class RequestRecord:
    """One request's facts (module doc). `base_model` names the model that is not an adapter."""

    def __init__(self, request_id: str, arrival: float | None = None) -> None:
        self.request_id = request_id
        self.arrival = time.perf_counter() if arrival is None else arrival
        self.model = ""
        self.base_model = ""
        self.worker = ""
        self.params: pb.SamplingParams | None = None
        self.prompt_tokens = self.output_tokens = self.cached_tokens = 0
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.finish_reasons: list[str] = []
        self.ended: float | None = None
        self.outcome = ""  # how the request ended when not by its finish reasons (an error, a status)

    @property
    def adapter(self) -> str | None:
        """The adapter serving the request; None for the base model."""
        return self.model if self.model and self.model != self.base_model else None

    def on_request(self, request: pb.GenerateRequest) -> None:
        if self.params is None:
            self.params = request.sampling_params
        self.model = self.model or request.model

    def on_start(self, start: pb.GenerateStart) -> None:
        self.prompt_tokens += len(start.prompt_token_ids)
        self.model = start.model or self.model

    def on_message(self, response: pb.GenerateResponse) -> None:
        kind = response.WhichOneof("response")
        if kind == "chunk":
            chunk = response.chunk
            if chunk.token_ids:
                now = time.perf_counter()
                self.first_token = self.first_token or now
                self.last_token = now
                self.output_tokens += len(chunk.token_ids)
            if chunk.finish_reason:
                self.finish_reasons.append(FINISH_REASON_NAMES.get(chunk.finish_reason, "stop"))
        elif kind == "start":
            self.on_start(response.start)
        elif kind == "usage":
            self.cached_tokens += response.usage.cached_prompt_tokens

    def finish(self, outcome: str = "") -> None:
        """The request ended (`outcome`: why, when not by its finish reasons); only the first call counts."""
        if self.ended is None:
            self.ended, self.outcome = time.perf_counter(), outcome

    def timings(self) -> dict[str, float | None]:
        """Seconds: ttft, decode and total (None for what did not happen)."""
        end = self.ended if self.ended is not None else time.perf_counter()
        first, last = self.first_token, self.last_token
        return {
            "ttft_s": None if first is None else round(first - self.arrival, 6),
            "decode_s": None if first is None else round(last - first, 6),
            "total_s": round(end - self.arrival, 6),
        }

    def fields(self) -> dict[str, Any]:
        """The finished line's structured fields (JSON logs)."""
        return {
            "model": self.model or None,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "cached_prompt_tokens": self.cached_tokens,
            **self.timings(),
            "finish_reason": ",".join(self.finish_reasons) or None,
            "outcome": self.outcome or None,
        }

    def log_received(self, log: logging.Logger, request_id: str | None = None) -> None:
        """The "received" INFO line (vLLM's "Received request"), with no prompt text."""
        if not log.isEnabledFor(logging.INFO):
            return
        params = params_summary(self.params) if self.params is not None else ""
        fields = {"prompt_tokens": self.prompt_tokens, "params": params, "model": self.model or None}
        log.info(
            "received request %s: adapter=%s prompt_tokens=%d params={%s}",
            request_id or self.request_id,
            self.adapter,
            self.prompt_tokens,
            params,
            extra={"fields": fields},
        )

    def log_finished(self, log: logging.Logger) -> None:
        """The "finished" INFO line: worker, token counts, timings and how it ended."""
        if not log.isEnabledFor(logging.INFO):
            return
        f = self.fields()
        log.info(
            "finished request %s: adapter=%s worker=%s prompt_tokens=%d output_tokens=%d ttft=%s decode=%s "
            "total=%.3fs finish_reason=%s%s",
            self.request_id,
            self.adapter,
            self.worker or None,
            self.prompt_tokens,
            self.output_tokens,
            _seconds(f["ttft_s"]),
            _seconds(f["decode_s"]),
            f["total_s"],
            f["finish_reason"],
            f" outcome={self.outcome}" if self.outcome else "",
            extra={"fields": f},
        )

    def span_attributes(self) -> dict[str, Any]:
        """The span's attributes (loraplane.tracing names)."""
        t, p = self.timings(), self.params
        has = (lambda name: p is not None and p.HasField(name)) if p is not None else (lambda name: False)
        return {
            tracing.REQUEST_ID: self.request_id,
            tracing.REQUEST_MODEL: self.model or None,
            tracing.RESPONSE_MODEL: self.model or None,
            tracing.ADAPTER: self.adapter,
            tracing.WORKER: self.worker or None,
            tracing.REQUEST_MAX_TOKENS: p.max_tokens if has("max_tokens") else None,
            tracing.REQUEST_TEMPERATURE: p.temperature if has("temperature") else None,
            tracing.REQUEST_TOP_P: p.top_p if has("top_p") else None,
            tracing.REQUEST_N: p.n if has("n") else None,
            tracing.USAGE_PROMPT_TOKENS: self.prompt_tokens,
            tracing.USAGE_COMPLETION_TOKENS: self.output_tokens,
            tracing.CACHED_PROMPT_TOKENS: self.cached_tokens,
            tracing.FINISH_REASONS: self.finish_reasons or None,
            tracing.LATENCY_TTFT: t["ttft_s"],
            tracing.LATENCY_DECODE: t["decode_s"],
            tracing.LATENCY_E2E: t["total_s"],
        }


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(list(value)) if not isinstance(value, (int, str, bool)) else str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"
