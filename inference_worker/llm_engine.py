"""LLMEngine: requests in, one scheduled step at a time, RequestOutput snapshots out (synchronous).

Engine -> Scheduler -> ModelRunner -> Model. The offline `LLM` and the `AsyncLLMEngine` both drive it.
"""

from __future__ import annotations

import logging

from loraplane.inference_worker.block_manager import BlockManager
from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.detokenizer import IncrementalDetokenizer
from loraplane.inference_worker.errors import InvalidRequestError, ModelLoadError
from loraplane.inference_worker.layers.sampler import SampleResult
from loraplane.inference_worker.model_loader import (
    build_model,
    checkpoint_files,
    load_hf_config,
    resolve_model_path,
)
from loraplane.inference_worker.model_runner import InFlightStep, ModelRunner
from loraplane.inference_worker.outputs import EngineStats, Logprob, RequestOutput
from loraplane.inference_worker.request_state import RequestState
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.scheduler import ScheduledBatch, Scheduler, SchedulerConfig
from loraplane.inference_worker.sequence import Sequence, SequenceStatus
from transformers import AutoTokenizer

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        path = resolve_model_path(config.model)
        self.model_path = path
        self.model_name = config.served_model_name or _default_name(config.model)
        self.hf_config = load_hf_config(path)
        if config.load_format != "dummy":
            checkpoint_files(path)  # a folder without weights fails here, before anything slow
        self.device = config.torch_device()
        self.dtype = config.torch_dtype(self.hf_config, self.device)
        self.max_model_len = _max_model_len(config, self.hf_config)
        self.tokenizer = None if config.skip_tokenizer_init else _load_tokenizer(config.tokenizer or path)
        model = build_model(config, self.hf_config, path, self.device, self.dtype, self.max_model_len)
        max_tokens = config.max_num_batched_tokens or max(
            8192 if self.device.type == "cuda" else 2048, config.max_num_seqs
        )
        self.lora_manager = self._make_lora_manager(model, max_tokens) if config.enable_lora else None
        self.eos_token_ids = _eos_ids(self.hf_config, self.tokenizer, path)
        self.runner = ModelRunner(
            config,
            self.hf_config,
            model,
            self.device,
            self.dtype,
            self.max_model_len,
            self.eos_token_ids,
            self.lora_manager,
        )
        num_blocks = self.runner.num_blocks_to_allocate(max_tokens)
        self.runner.allocate_kv_cache(num_blocks)
        self.runner.capture_cuda_graphs()
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        sched_config = SchedulerConfig(
            config.max_num_seqs,
            max_tokens,
            config.max_loras if config.enable_lora else 0,
            config.lora_starvation_steps,
        )
        ready = self.lora_manager.is_ready if self.lora_manager is not None else (lambda version: True)
        self.scheduler = Scheduler(sched_config, self.block_manager, ready)
        self.requests: dict[str, RequestState] = {}
        self.async_scheduling = config.uses_async_scheduling(self.device)
        self._in_flight: InFlightStep | None = None
        logger.info(
            "engine ready: %s on %s (%s), max_model_len=%d",
            self.model_name,
            self.device,
            self.dtype,
            self.max_model_len,
        )

    def _make_lora_manager(self, model, max_num_tokens: int):
        from loraplane.inference_worker.lora import LoRAConfig, LoRAManager

        c = self.config
        lora_config = LoRAConfig(
            max_loras=c.max_loras,
            max_lora_rank=c.max_lora_rank,
            max_cpu_loras=c.max_cpu_loras,
            lora_dtype=c.lora_dtype,
            target_modules=c.lora_target_modules,
        )
        return LoRAManager(lora_config, model, self.device, self.dtype, max_num_tokens=max_num_tokens)

    # ---- requests -------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        lora_request=None,
    ) -> None:
        """Validate and queue a request. Raises InvalidRequestError / AdapterNotFoundError; on error
        nothing is queued."""
        self.enqueue(self.make_request(request_id, prompt, params, lora_request))

    def make_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        lora_request=None,
    ) -> RequestState:
        """Validate a request and build its state without touching the queues (safe from any thread)."""
        params = params or SamplingParams()
        prompt_text, prompt_ids = self._tokenize(prompt)
        version = self._lora_version(lora_request)
        state = RequestState(request_id, prompt_text, prompt_ids, params, [], [], lora_request)
        if params.prompt_logprobs is not None:
            state.prompt_logprobs = [None] * len(prompt_ids)
        for index in range(params.n):
            seq = Sequence(
                prompt_ids,
                params,
                request_id=request_id,
                index=index,
                lora_version=version,
                block_size=self.config.block_size,
            )
            state.seqs.append(seq)
            detok = None
            if params.detokenize and self.tokenizer is not None:
                detok = IncrementalDetokenizer(
                    self.tokenizer,
                    prompt_ids,
                    params.skip_special_tokens,
                    params.stop_strings,
                    params.include_stop_str_in_output,
                )
            state.detokenizers.append(detok)
        return state

    def enqueue(self, state: RequestState) -> None:
        if state.request_id in self.requests:
            raise InvalidRequestError(
                f"request_id {state.request_id!r} is already in use", param="request_id"
            )
        self.requests[state.request_id] = state
        for seq in state.seqs:
            self.scheduler.add(seq)

    def _tokenize(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidRequestError("skip_tokenizer_init is set: send token ids", param="prompt")
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, [int(t) for t in prompt]
        if not ids:
            raise InvalidRequestError("prompt is empty", param="prompt")
        if len(ids) >= self.max_model_len:
            raise InvalidRequestError(
                f"prompt has {len(ids)} tokens but max_model_len is {self.max_model_len} "
                "(at least one token must fit after it); shorten the prompt",
                param="prompt",
            )
        vocab = self.hf_config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})", param="prompt")
        return text, ids

    def _lora_version(self, lora_request) -> str | None:
        if lora_request is None:
            return None
        if self.lora_manager is None:
            raise InvalidRequestError("this engine was started without enable_lora", param="lora_request")
        return self.lora_manager.version_of(lora_request)

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its KV blocks at once; False when it is unknown or already done."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return False
        for seq in state.seqs:
            self._release(seq)
        return True

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.runner.release(seq)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or self._in_flight is not None

    # ---- the step ------------------------------------------------------------------------------
    def step(self, finished_only: bool = False) -> list[RequestOutput]:
        """Run one batch and return a snapshot of every request that made progress (only of those that
        finished with `finished_only`, for callers that do not stream).

        With async scheduling, a decode step's successor (the same sequences, one token further) is
        queued on the device before this step's tokens are read back, so the host work of one step
        (reading tokens, stop checks, outputs, scheduling, inputs) overlaps the GPU running the next.
        The successor is only queued when it is exactly the step the scheduler would run next; a
        sequence that turns out to have finished just has its extra token dropped.
        """
        step, self._in_flight = self._in_flight, None
        if step is None:
            batch = self.scheduler.schedule()
            if batch.is_empty:
                return []
            step = self.runner.launch(batch)
        if self.async_scheduling:
            follow = self._lookahead(step.batch)
            if follow is not None:
                self._in_flight = self.runner.launch(follow, prev=step)
        return self._process(step, finished_only)

    def _lookahead(self, batch: ScheduledBatch) -> ScheduledBatch | None:
        """The decode step after `batch` for its sequences that cannot finish by length there, if the
        sampling of every one of them needs nothing from the host (no penalties, no pending min_tokens)."""
        if not batch.is_decode:
            return None
        rows = []
        for i, seq in enumerate(batch.seqs):
            params = seq.params
            if seq.is_finished:
                continue
            if params.needs_penalties or params.min_tokens > seq.num_output_tokens:
                return None
            limit = params.max_tokens or self.max_model_len
            if seq.num_output_tokens + 1 < limit and len(seq) + 1 < self.max_model_len:
                rows.append(i)
        return self.scheduler.schedule_lookahead(batch, rows)

    def _process(self, step: InFlightStep, finished_only: bool) -> list[RequestOutput]:
        batch = step.batch
        sampled, result, prompt_logprobs = self.runner.finish(step)
        for scored in prompt_logprobs:
            entries = self.requests[scored.seq.request_id].prompt_logprobs
            for offset, top in enumerate(scored.entries):
                entries[scored.first_token + offset] = self._logprob_dict(top)
        # A lookahead row of a sequence that finished (or was aborted) meanwhile is dropped.
        live = {seq for seq in batch.seqs if not seq.is_finished}
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=False):
            if seq in live:
                seq.num_computed_tokens += num_new
        touched: dict[str, RequestState] = {}
        for i, seq in enumerate(sampled):
            if seq in live:
                self._append(seq, result, i)
                touched[seq.request_id] = self.requests[seq.request_id]
        queued = set(self._in_flight.batch.seqs) if self._in_flight is not None else set()
        for seq in batch.seqs:
            if seq in live:
                self.block_manager.cache_blocks(seq)
            if seq.is_finished and seq not in queued:  # the queued step still writes its KV blocks
                self._release(seq)
        states = touched.values()
        if finished_only:
            states = [state for state in states if state.finished]
        outputs = [state.snapshot() for state in states]
        for out in outputs:
            if out.finished:
                del self.requests[out.request_id]
        return outputs

    def _append(self, seq: Sequence, result: SampleResult, i: int) -> None:
        token = result.token_ids[i]
        seq.append_token(token)
        if result.top_logprobs[i] is not None:  # this request asked for logprobs (others may not)
            seq.cumulative_logprob += result.logprobs[i]
            seq.output_logprobs.append(self._logprob_dict(result.top_logprobs[i]))
        params = seq.params
        is_eos = token in self.eos_token_ids and not params.ignore_eos
        detok = self.requests[seq.request_id].detokenizers[seq.index]
        stop_str = None
        if detok is not None and not is_eos and token not in params.stop_token_ids:
            stop_str = detok.add_token(token)
        if is_eos:
            self._finish(seq, "stop", None)
        elif token in params.stop_token_ids:
            self._finish(seq, "stop", token)
        elif stop_str is not None:
            self._finish(seq, "stop", stop_str)
        elif (
            seq.num_output_tokens >= (params.max_tokens or self.max_model_len)
            or len(seq) >= self.max_model_len
        ):
            self._finish(seq, "length", None)

    def _logprob_dict(self, top: dict[int, tuple[float, int]]) -> dict[int, Logprob]:
        return {t: Logprob(lp, rank, self._decode_one(t)) for t, (lp, rank) in top.items()}

    def _decode_one(self, token_id: int) -> str | None:
        return None if self.tokenizer is None else self.tokenizer.decode([token_id])

    def _finish(self, seq: Sequence, reason: str, stop_reason) -> None:
        seq.finish_reason, seq.stop_reason = reason, stop_reason
        seq.status = SequenceStatus.FINISHED

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            kv_usage=bm.usage,
            num_free_blocks=bm.num_free_blocks,
            num_total_blocks=bm.num_blocks,
            prefix_cache_hits=bm.stats.hits,
            prefix_cache_queries=bm.stats.queries,
        )


def _default_name(model: str | None) -> str:
    if model is None:
        from loraplane.inference_worker.demo import DEMO_MODEL_NAME

        return DEMO_MODEL_NAME
    return model


def _max_model_len(config: EngineConfig, hf_config) -> int:
    limit = getattr(hf_config, "max_position_embeddings", None) or 4096
    window = getattr(hf_config, "sliding_window", None)
    if window and getattr(hf_config, "use_sliding_window", True):
        limit = min(limit, window)
    if config.max_model_len is None:
        return limit
    if config.max_model_len > limit:
        raise ModelLoadError(
            f"max_model_len={config.max_model_len} exceeds the model's limit of {limit} positions"
        )
    return config.max_model_len


def _load_tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot load its tokenizer: {exc}") from exc


def _eos_ids(hf_config, tokenizer, path: str) -> set[int]:
    ids: set[int] = set()
    candidates = [getattr(hf_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)]
    try:
        from transformers import GenerationConfig

        candidates.append(GenerationConfig.from_pretrained(path).eos_token_id)
    except Exception:
        logger.debug("no generation_config.json in %s", path)
    for c in candidates:
        if isinstance(c, int):
            ids.add(c)
        elif isinstance(c, (list, tuple)):
            ids.update(int(x) for x in c)
    return ids
