"""The offline API, as vLLM has it: `LLM(model=...).generate(prompts, sampling_params)`."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.llm_engine import LLMEngine
from loraplane.inference_worker.outputs import RequestOutput
from loraplane.inference_worker.sampling_params import SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from loraplane.inference_worker.lora import AdapterInfo, LoRARequest

logger = logging.getLogger(__name__)

Prompt = str | list[int]


def _per_prompt(value, count: int, name: str) -> list:
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"{name}: got {len(value)} values for {count} prompts")
        return value
    return [value] * count


class LLM:
    """Loads a model once and generates for batches of prompts (continuous batching inside).

    `LLM()` serves the demo model; keyword arguments are `EngineConfig` fields (vLLM's names:
    dtype, device, max_num_seqs, max_model_len, gpu_memory_utilization, load_format, enable_lora,
    max_loras, max_lora_rank, max_cpu_loras, lora_dtype, enable_prefix_caching, seed, ...).
    """

    def __init__(self, model: str | None = None, **kwargs) -> None:
        self.config = EngineConfig.from_kwargs(model=model, **kwargs)
        self.engine = LLMEngine(self.config)
        self._ids = itertools.count()

    def get_tokenizer(self) -> PreTrainedTokenizerBase | None:
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Seq[Prompt],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        lora_request: LoRARequest | list[LoRARequest | None] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in order. A bad request raises (InvalidRequestError) before anything
        runs; a request whose outputs fail to process raises RequestFailedError and the rest are aborted."""
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        prompts = list(prompts)
        params = _per_prompt(sampling_params or SamplingParams(), len(prompts), "sampling_params")
        loras = _per_prompt(lora_request, len(prompts), "lora_request")
        ids = [f"offline-{next(self._ids)}" for _ in prompts]
        try:
            for request_id, prompt, p, lora in zip(ids, prompts, params, loras, strict=False):
                self.engine.add_request(request_id, prompt, p, lora)
        except Exception:
            for request_id in ids:
                self.engine.abort(request_id)
            raise
        return self._run(ids, use_tqdm)

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        wanted = set(ids)
        done: dict[str, RequestOutput] = {}
        progress = None
        if use_tqdm:
            from tqdm import tqdm

            progress = tqdm(total=len(ids), desc="generating")
        try:
            while len(done) < len(ids):
                for out in self.engine.step(finished_only=True):
                    if out.finished and out.request_id in wanted:
                        done[out.request_id] = out
                        if progress is not None:
                            progress.update(1)
                for failure in self.engine.take_failures():
                    if failure.request_id in wanted:  # the engine goes on; this call cannot complete
                        raise failure.error
        except BaseException:
            for request_id in ids:
                self.engine.abort(request_id)
            raise
        finally:
            if progress is not None:
                progress.close()
        return [done[i] for i in ids]

    def chat(
        self,
        messages: list[dict[str, str]] | list[list[dict[str, str]]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        lora_request: LoRARequest | list[LoRARequest | None] | None = None,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Apply the tokenizer's chat template to one conversation (a list of {role, content}) or to a list
        of conversations, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        tokenizer = self.engine.tokenizer
        prompts = [
            list(
                tokenizer.apply_chat_template(
                    conv,
                    add_generation_prompt=add_generation_prompt,
                    tokenize=True,
                    chat_template=chat_template,
                    return_dict=False,
                )
            )
            for conv in conversations
        ]
        return self.generate(prompts, sampling_params, lora_request, use_tqdm)

    # ---- adapters (need enable_lora; the engine's API, see LLMEngine) ----------------------------
    def add_lora(self, lora_request: LoRARequest) -> bool:
        return self.engine.add_lora(lora_request)

    def remove_lora(self, name_or_id: str | int) -> bool:
        return self.engine.remove_lora(name_or_id)

    def pin_lora(self, name_or_id: str | int) -> bool:
        return self.engine.pin_lora(name_or_id)

    def list_loras(self) -> list[AdapterInfo]:
        return self.engine.list_loras()
