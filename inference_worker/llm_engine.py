"""LLMEngine: requests in, one scheduled step at a time, RequestOutput snapshots out (synchronous).

Engine -> Scheduler -> ModelRunner -> Model. The offline `LLM` and the `AsyncLLMEngine` both drive it.
The model, tokenizer and HF config come from `model_loader.load_model`; a step's samples become tokens,
logprobs and stops in `output_processor`. The adapter API (`add_lora`, `remove_lora`, `pin_lora`,
`list_loras`) lives here once, behind one check that the engine was started with `enable_lora`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from loraplane.inference_worker.block_manager import BlockManager
from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.errors import AdapterNotFoundError, InvalidRequestError
from loraplane.inference_worker.model_loader import LoadedModel, load_model
from loraplane.inference_worker.model_runner import InFlightStep, ModelRunner
from loraplane.inference_worker.output_processor import OutputProcessor
from loraplane.inference_worker.outputs import EngineStats, RequestOutput, RequestUpdate
from loraplane.inference_worker.request_state import RequestFailure, RequestState
from loraplane.inference_worker.request_validation import ModelLimits, validated_prompt
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.scheduler import Scheduler, SchedulerConfig, prefill_context_cost
from loraplane.inference_worker.sequence import Sequence

if TYPE_CHECKING:
    from loraplane.inference_worker.lora import AdapterInfo, LoRAManager, LoRARequest

logger = logging.getLogger(__name__)

_FAILED = object()  # what `_guard` returns for work that raised
LORA_DISABLED = "LoRA is not enabled on this engine: start it with enable_lora=True (--enable-lora)"


class LLMEngine:
    """Assembles the engine from a loaded model and runs it one step at a time.

    `LLMEngine(config)` loads the model through `model_loader.load_model`; a caller that already has a
    `LoadedModel` passes it. With `detokenize=False` (the async engine) the engine produces token ids and
    finish info only: no text, no stop strings, no logprob text (see `step_updates`). The engine owns the
    LoRA manager (with `enable_lora`), the runner, the block manager and the scheduler; it never reads
    the model's files itself.
    """

    def __init__(
        self, config: EngineConfig, loaded: LoadedModel | None = None, detokenize: bool = True
    ) -> None:
        self.config = config
        self.detokenize = detokenize
        loaded = loaded if loaded is not None else load_model(config)
        self.model_path, self.model_name = loaded.path, loaded.name
        self.hf_config, self.tokenizer = loaded.hf_config, loaded.tokenizer
        self.device, self.dtype = loaded.device, loaded.dtype
        self.max_model_len, self.eos_token_ids = loaded.max_model_len, loaded.eos_token_ids
        max_tokens = config.max_num_batched_tokens or max(
            8192 if self.device.type == "cuda" else 2048, config.max_num_seqs
        )
        self.lora_manager: LoRAManager | None = None
        if config.enable_lora:
            from loraplane.inference_worker.lora import LoRAManager

            lora_config = config.lora_config()
            self.lora_manager = LoRAManager(lora_config, loaded.model, self.device, self.dtype, max_tokens)
        self.runner = ModelRunner(
            config,
            self.hf_config,
            loaded.model,
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
            config.prefill_cap(self.device.type),
            prefill_context_cost(self.hf_config, self.device.type),
        )
        ready = self.lora_manager.is_ready if self.lora_manager is not None else (lambda version: True)
        self.scheduler = Scheduler(sched_config, self.block_manager, ready)
        self.requests: dict[str, RequestState] = {}
        self.limits = ModelLimits(self.hf_config.vocab_size, self.max_model_len, config.max_num_seqs)
        self._failures: list[RequestFailure] = []
        self.output_processor = OutputProcessor(
            self.tokenizer, self.eos_token_ids, self.max_model_len, detokenize
        )
        self.async_scheduling = config.uses_async_scheduling(self.device.type)
        self._in_flight: InFlightStep | None = None
        facts = (self.model_name, self.device, self.dtype, self.max_model_len)
        logger.info("engine ready: %s on %s (%s), max_model_len=%d", *facts)

    # ---- requests -------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        lora_request: LoRARequest | None = None,
    ) -> None:
        """Validate and queue a request. Raises InvalidRequestError / AdapterNotFoundError; on error
        nothing is queued."""
        self.enqueue(self.make_request(request_id, prompt, params, lora_request))

    def make_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        lora_request: LoRARequest | None = None,
    ) -> RequestState:
        """Validate a request against the model (`request_validation`) and build its state without
        touching the queues (safe from any thread)."""
        params = params or SamplingParams()
        text, ids = validated_prompt(prompt, params, self.tokenizer, self.limits)
        version = None if lora_request is None else self.require_lora().version_of(lora_request)
        detok_tokenizer = self.tokenizer if self.detokenize else None
        return RequestState.create(
            request_id, text, ids, params, lora_request, version, self.config.block_size, detok_tokenizer
        )

    def enqueue(self, state: RequestState) -> None:
        if state.request_id in self.requests:
            raise InvalidRequestError(
                f"request_id {state.request_id!r} is already in use", param="request_id"
            )
        self.requests[state.request_id] = state
        for seq in state.seqs:
            self.scheduler.add(seq)

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its KV blocks at once; False when it is unknown or already done."""
        state = self.requests.pop(request_id, None)
        for seq in state.seqs if state is not None else ():
            self._release(seq)
        return state is not None

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.runner.release(seq)

    def take_failures(self) -> list[RequestFailure]:
        """Requests that failed in output processing since the last call (already dropped and freed)."""
        failures, self._failures = self._failures, []
        return failures

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or self._in_flight is not None

    # ---- adapters (vLLM's LoRA API) -------------------------------------------------------------
    def require_lora(self) -> LoRAManager:
        """The LoRA manager: the one place that rejects adapter use on an engine without `enable_lora`
        (InvalidRequestError, param `lora_request`)."""
        if self.lora_manager is None:
            raise InvalidRequestError(LORA_DISABLED, param="lora_request")
        return self.lora_manager

    def add_lora(self, lora_request: LoRARequest) -> bool:
        """Register an adapter and load its weights into the CPU cache, blocking until done. Raises the
        load's error (AdapterLoadError, AdapterAlreadyLoadedError, ...); True otherwise."""
        self.require_lora().add(lora_request).result()
        return True

    def remove_lora(self, lora: str | int) -> bool:
        """Unregister an adapter (by name or `lora_int_id`); its running requests finish. False when no
        adapter of that name is registered."""
        return self.require_lora().remove(self._lora_name(lora))

    def pin_lora(self, lora: str | int) -> bool:
        """Keep an adapter's weights in the CPU cache (never evicted). AdapterNotFoundError when it is not
        registered; False when pinning it would leave the CPU cache no unpinned entry."""
        return self.require_lora().pin(self._lora_name(lora))

    def list_loras(self) -> list[AdapterInfo]:
        """The registered adapters, then those still loading (vLLM returns ids; we return their info)."""
        return self.require_lora().list()

    def _lora_name(self, lora: str | int) -> str:
        if isinstance(lora, str):
            return lora
        for info in self.require_lora().list():
            if info.int_id == lora:
                return info.name
        raise AdapterNotFoundError(f"no adapter with lora_int_id {lora}")

    # ---- the step ------------------------------------------------------------------------------
    def step(self, finished_only: bool = False) -> list[RequestOutput]:
        """Run one batch and return a snapshot of every request that made progress (only of those that
        finished with `finished_only`, for callers that do not stream)."""
        states = [s for s in self._run_step() if s.finished or not finished_only]
        return self._outputs(states, RequestState.snapshot)

    def step_updates(self) -> list[RequestUpdate]:
        """Run one batch; what each request produced in it (the async engine's hand-over, no text)."""
        return self._outputs(self._run_step(), RequestState.update)

    def _run_step(self) -> list[RequestState]:
        """Run one batch; the states of the requests that made progress. With async scheduling, a decode
        step's successor (the same sequences, one token further) is queued on the device before this
        step's tokens are read back, so the host work of one step (reading tokens, stop checks, outputs,
        scheduling, inputs) overlaps the GPU running the next. The successor is only queued when it is
        exactly the step the scheduler would run next; a sequence that turns out to have finished just has
        its extra token dropped."""
        step, self._in_flight = self._in_flight, None
        if step is None:
            batch = self.scheduler.schedule()
            if batch.is_empty:
                return []
            step = self.runner.launch(batch)
        if self.async_scheduling:
            follow = self.scheduler.lookahead(step.batch, self.max_model_len)
            if follow is not None:
                self._in_flight = self.runner.launch(follow, prev=step)
        return self._process(step)

    def _process(self, step: InFlightStep) -> list[RequestState]:
        batch = step.batch
        sampled, result, prompt_logprobs = self.runner.finish(step)
        for scored in prompt_logprobs:
            state = self.requests[scored.seq.request_id]
            self._guard(state.request_id, state.store_prompt_logprobs, scored, self.output_processor)
        # A lookahead row of a sequence that finished (or was aborted) meanwhile is dropped.
        live = {seq for seq in batch.seqs if not seq.is_finished}
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=False):
            if seq in live:
                seq.num_computed_tokens += num_new
        touched: set[str] = set()
        for i, seq in enumerate(sampled):
            if seq in live and seq.request_id in self.requests:  # not failed in this loop
                detok = self.requests[seq.request_id].detokenizers[seq.index]
                append = self.output_processor.append
                if self._guard(seq.request_id, append, seq, detok, result, i) is not _FAILED:
                    touched.add(seq.request_id)
        queued = self._queued()
        for seq in batch.seqs:
            if seq in live and seq.request_id in self.requests:
                self.block_manager.cache_blocks(seq)
            if seq.is_finished and seq not in queued:  # the queued step still writes its KV blocks
                self._release(seq)
        return [self.requests[rid] for rid in touched if rid in self.requests]

    def _outputs(self, states: list[RequestState], make):
        """`make(state)` per state (one that fails fails alone); finished requests leave the engine."""
        results = [self._guard(state.request_id, make, state) for state in states]
        outputs = [out for out in results if out is not _FAILED]
        for out in outputs:
            if out.finished:
                del self.requests[out.request_id]
        return outputs

    def _guard(self, request_id: str, work, *args):
        """`work(*args)` for one request; if it raises, that request alone fails (see `_fail`) and the
        result is _FAILED. Only output processing is guarded: a failure in the batch's forward or sampling
        cannot be laid at one request's door and still stops the engine."""
        try:
            result = work(*args)
        except Exception as exc:  # noqa: BLE001 - any failure here is this request's alone
            self._fail(request_id, exc)
            return _FAILED
        return result

    def _fail(self, request_id: str, exc: Exception) -> None:
        """Drop a request whose outputs could not be processed: its sequences finish ("abort") and free
        their KV blocks (those a queued step still writes, once that step is done); its caller hears of
        it through `take_failures`."""
        logger.error("request %s failed while its outputs were processed", request_id, exc_info=exc)
        state = self.requests.pop(request_id, None)
        if state is None:
            return
        queued = self._queued()
        for seq in state.finish_aborted():
            if seq not in queued:
                self._release(seq)
        self._failures.append(RequestFailure.of(request_id))

    def _queued(self) -> set[Sequence]:
        return set(self._in_flight.batch.seqs) if self._in_flight is not None else set()

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
            num_preemptions=self.scheduler.num_preemptions,
            running_lora_versions=frozenset(s.lora_version for s in self.scheduler.running if s.lora_version),
            waiting_lora_versions=frozenset(s.lora_version for s in self.scheduler.waiting if s.lora_version),
        )
