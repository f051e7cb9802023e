"""`vllm serve`'s flags on `loraplane serve` and `up`: each one is taken, or refused by name with a reason.

Semantics: `add_vllm_arguments(parser)` adds, besides the flags the topology already defines,
- the worker's engine flags (loraplane.inference_worker.service.cli) that serve/up did not define yet,
  forwarded unchanged to every worker (`worker_argv`);
- `--model` as an alias of the positional model, and the API key (`--api-key`, `--api-key-file`,
  loraplane.gateway.auth), which reaches the gateway through the environment, never its arguments;
- every other flag of `vllm serve --help` (`VLLM_SERVE_FLAGS`, committed in vllm_flags_list.py) under
  one policy from `POLICY`: `ACCEPTED` (same meaning here, or nothing to change: said in the reason),
  `REFUSED` (any value refused, naming the flag and why) or `ONLY` (accepted at the one value that
  matches how loraplane runs, e.g. `--tensor-parallel-size 1`; another value is refused).
`apply_vllm_flags(args)` checks them after parsing and raises ValueError naming the flag; the caller
prints it (no argparse usage dump for a flag vLLM users pass by habit).
"""

from __future__ import annotations

import argparse
import logging
import os

from loraplane.gateway.auth import ENV_API_KEY, add_api_key_arguments, api_key_from

log = logging.getLogger(__name__)


def add_vllm_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the module docstring that `parser` does not define yet."""
    group = parser.add_argument_group("vLLM compatibility (vllm serve's names)")
    group.add_argument("--model", dest="model_flag", default=None, help="same as the positional MODEL")
    add_api_key_arguments(group)


def parse_modules(values) -> list[tuple[str, str, str | None]]:
    """--lora-modules items -> (name, path, base_model_name), with vLLM's two formats and messages."""
    from loraplane.inference_worker.service.config import parse_lora_modules

    return [(m.name, m.path, m.base_model_name) for m in parse_lora_modules(values)]


def apply_vllm_flags(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """Resolve aliases, refuse what cannot apply, export the API key for the gateway; returns the parsed
    --lora-modules. ValueError naming the flag."""
    if args.model_flag:
        if args.model and args.model != args.model_flag:
            raise ValueError(f"--model {args.model_flag} and the positional model {args.model} differ")
        args.model = args.model_flag
    key = api_key_from(args)
    if key:
        os.environ[ENV_API_KEY] = key  # the gateway child inherits it; `ps` never shows it
    return parse_modules(args.lora_modules)
