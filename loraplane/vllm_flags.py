"""`vllm serve`'s flags on `loraplane serve` and `up`: each one is taken, or refused by name with a reason.

Semantics: `add_vllm_arguments(parser)` adds, besides the flags the topology already defines,
- the worker's engine flags (loraplane.inference_worker.service.cli) that serve/up did not define yet,
  forwarded unchanged to every worker (`worker_argv`);
- `--model` as an alias of the positional model, and the API key (`--api-key`, `--api-key-file`,
  loraplane.gateway.auth), which reaches the gateway through the environment, never its arguments;
- every other flag of `vllm serve --help` (`VLLM_SERVE_FLAGS`, committed in vllm_flags_list.py) under
  one policy: `ACCEPTED` (nothing to change here; the reason, logged, says why), `ONLY` (taken at the
  value that matches how loraplane runs, e.g. `--tensor-parallel-size 1`; another value is refused), or
  refused at any value, naming the flag and why (`REFUSED`, else `GENERIC`).
`apply_vllm_flags(args)` checks them after parsing and raises ValueError naming the flag; the caller
prints it (no argparse usage dump for a flag vLLM users pass by habit).
"""

from __future__ import annotations

import argparse
import logging
import os

from loraplane.gateway.auth import ENV_API_KEY, add_api_key_arguments, api_key_from
from loraplane.gateway.config import ENV_UVICORN_LOG_LEVEL, UVICORN_LOG_LEVELS
from loraplane.vllm_flags_list import VLLM_SERVE_FLAGS

log = logging.getLogger(__name__)


NOT_BUILT = "not built in loraplane yet"
ONE_GPU = (
    "tensor, pipeline, data and expert parallelism are not built yet: a worker serves on one device; "
    "run more workers with `loraplane up --workers N`"
)
ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-dp": "--data-parallel-size",
    "-q": "--quantization",
    "-O": "--compilation-config",
}
# vLLM flags that take no value (store_true, or a form of a BooleanOptionalAction).
SWITCHES = frozenset(
    """
    disable-uvicorn-access-log allow-credentials enable-ssl-refresh return-tokens-as-token-ids
    disable-frontend-multiprocessing enable-request-id-headers enable-auto-tool-choice
    exclude-tools-when-tool-choice-none disable-fastapi-docs enable-prompt-tokens-details
    enable-server-load-tracking enable-force-include-usage enable-tokenizer-info-endpoint enable-log-outputs
    log-error-stack headless disable-log-requests enable-log-requests disable-log-stats trust-remote-code
    enforce-eager disable-sliding-window disable-cascade-attn skip-tokenizer-init enable-prompt-embeds
    enable-sleep-mode use-tqdm-on-load guided-decoding-disable-fallback guided-decoding-disable-any-whitespace
    guided-decoding-disable-additional-properties data-parallel-hybrid-lb enable-expert-parallel enable-eplb
    ray-workers-use-nsight disable-custom-all-reduce enable-multimodal-encoder-data-parallel
    enable-prefix-caching no-enable-prefix-caching calculate-kv-scales kv-sharing-fast-prefill
    disable-mm-preprocessor-cache interleave-mm-strings skip-mm-profiling enable-lora enable-lora-bias
    fully-sharded-loras enable-chunked-prefill no-enable-chunked-prefill disable-chunked-mm-input
    disable-hybrid-kv-cache-manager async-scheduling no-async-scheduling
    """.split()  # noqa: SIM905 (a block of names reads like the help it comes from)
)
# Taken, changing nothing here: the reason says why.
ACCEPTED = {
    "--trust-remote-code": "loraplane runs its own model code and never executes a repository's Python",
    "--disable-log-stats": "loraplane logs no periodic engine stats; they are on /metrics",
    "--enable-log-requests": "requests are logged unless --disable-log-requests",
    "--disable-uvicorn-access-log": "the gateway writes no uvicorn access log",
    "--enable-prompt-tokens-details": "usage has prompt_tokens_details.cached_tokens on a prefix cache hit",
    "--disable-frontend-multiprocessing": "the gateway is already a process of its own",
    "--disable-custom-all-reduce": "there is no all-reduce without tensor parallelism",
    "--enable-chunked-prefill": "chunked prefill is always on",
    "--swap-space": "a preempted sequence is recomputed, never swapped to CPU memory",
    "--use-tqdm-on-load": "loading shows its own progress",
}
POOLING = "pooling and embedding models are " + NOT_BUILT
# Taken at the one value that matches how loraplane runs (case-insensitive); any other is refused.
ONLY = {
    "--tensor-parallel-size": ({"1"}, ONE_GPU),
    "--pipeline-parallel-size": ({"1"}, ONE_GPU),
    "--data-parallel-size": ({"1"}, ONE_GPU),
    "--decode-context-parallel-size": ({"1"}, ONE_GPU),
    "--api-server-count": ({"1"}, "one gateway process serves the API; run more with `loraplane up`"),
    "--quantization": ({"none"}, "quantized weights are " + NOT_BUILT),
    "--kv-cache-dtype": ({"auto"}, "a KV cache dtype other than the model's is " + NOT_BUILT),
    "--tokenizer-mode": ({"auto"}, "tokenizer modes other than auto are " + NOT_BUILT),
    "--model-impl": ({"auto"}, "loraplane runs its own model implementations only"),
    "--runner": ({"auto", "generate"}, POOLING),
    "--convert": ({"auto", "none"}, POOLING),
    "--task": ({"auto", "generate"}, POOLING),
    "--config-format": ({"auto", "hf"}, "only Hugging Face config.json is read"),
    "--response-role": ({"assistant"}, "another response role is " + NOT_BUILT),
    "--chat-template-content-format": ({"auto", "string"}, "only text content is served"),
    "--generation-config": (
        {"vllm"},
        "the sampling defaults of a model's generation_config.json are not applied yet (only its end-of-"
        "sequence ids are): pass --generation-config vllm for vLLM's defaults, which loraplane applies",
    ),
    "--logprobs-mode": ({"raw_logprobs"}, "logprobs are the model's raw log-probabilities only"),
    "--preemption-mode": ({"recompute"}, "a preempted sequence is recomputed"),
    "--scheduling-policy": ({"fcfs"}, "scheduling is first come, first served"),
    "--num-scheduler-steps": ({"1"}, "multi-step scheduling is " + NOT_BUILT),
    "--num-lookahead-slots": ({"0"}, "lookahead slots (speculative decoding) are " + NOT_BUILT),
    "--scheduler-delay-factor": ({"0", "0.0"}, "a scheduler delay is " + NOT_BUILT),
    "--cpu-offload-gb": ({"0", "0.0"}, "CPU weight offload is " + NOT_BUILT),
    "--lora-extra-vocab-size": ({"0"}, "adapters with extra vocabulary are " + NOT_BUILT),
}
# Refused at any value, by groups sharing a reason; the rest of VLLM_SERVE_FLAGS get GENERIC.
_GROUPS = (
    (
        "tool calling is " + NOT_BUILT + " (requests with tools get 400)",
        "enable-auto-tool-choice tool-call-parser tool-parser-plugin tool-server "
        "exclude-tools-when-tool-choice-none",
    ),
    (
        "structured output is " + NOT_BUILT + " (requests with response_format or guided_* get 400)",
        "guided-decoding-backend guided-decoding-disable-fallback guided-decoding-disable-any-whitespace "
        "guided-decoding-disable-additional-properties structured-outputs-config reasoning-parser",
    ),
    (
        "multimodal models are " + NOT_BUILT,
        "allowed-local-media-path allowed-media-domains limit-mm-per-prompt media-io-kwargs "
        "mm-processor-kwargs mm-processor-cache-gb disable-mm-preprocessor-cache mm-encoder-tp-mode "
        "interleave-mm-strings skip-mm-profiling default-mm-loras disable-chunked-mm-input "
        "enable-multimodal-encoder-data-parallel",
    ),
    (
        ONE_GPU,
        "data-parallel-rank data-parallel-start-rank data-parallel-size-local data-parallel-address "
        "data-parallel-rpc-port data-parallel-backend data-parallel-hybrid-lb enable-expert-parallel "
        "enable-eplb eplb-config num-redundant-experts distributed-executor-backend ray-workers-use-nsight "
        "headless fully-sharded-loras",
    ),
    (
        "HTTPS for serve and up takes --tls-cert and --tls-key (which also secure the gRPC links; "
        "`loraplane gateway` takes --ssl-certfile/--ssl-keyfile)",
        "ssl-keyfile ssl-certfile ssl-ca-certs enable-ssl-refresh ssl-cert-reqs",
    ),
    ("set the log level with --log-level and the format with --log-format", "log-config-file"),
    ("set HF_TOKEN in the environment instead (an argument shows in `ps`)", "hf-token"),
    (
        "models come from a local folder or the Hugging Face cache (HF_HOME); a revision or a download "
        "folder is " + NOT_BUILT,
        "revision code-revision tokenizer-revision download-dir",
    ),
    ("CORS headers are " + NOT_BUILT, "allow-credentials allowed-origins allowed-methods allowed-headers"),
    ("speculative decoding is " + NOT_BUILT, "speculative-config"),
    (
        "torch.compile configs are " + NOT_BUILT + "; --enforce-eager turns CUDA graphs off",
        "compilation-config cuda-graph-sizes max-seq-len-to-capture",
    ),
)
# Defined by loraplane.cli for every serving command after the command's own flags (loraplane.observability).
OBSERVABILITY = frozenset({"--disable-log-requests", "--otlp-traces-endpoint"})
REFUSED = {f"--{name}": reason for reason, names in _GROUPS for name in names.split()}
GENERIC = NOT_BUILT + "; see `loraplane serve --help` for what is"


def _dest(flag: str) -> str:
    return "vllm_" + flag.lstrip("-").replace("-", "_")


def _worker_flags() -> list[tuple[str, str, object, str]]:
    """(flag, dest, type or 'switch' or 'toggle', help) of the worker's engine flags."""
    from loraplane.inference_worker.service import cli

    flags = [(f, d, kind, h) for f, d, kind, h in cli.ENGINE_OPTIONS]
    flags += [(f, d, "switch", h) for f, d, h in cli.ENGINE_SWITCHES]
    return flags + [(f, d, "toggle", h) for f, d, h in cli.ENGINE_TOGGLES]


def add_vllm_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the module docstring that `parser` does not define yet."""
    group = parser.add_argument_group("vLLM compatibility (vllm serve's names; see loraplane/vllm_flags.py)")
    group.add_argument("--model", dest="model_flag", default=None, help="same as the positional MODEL")
    add_api_key_arguments(group)
    group.add_argument(
        "--uvicorn-log-level",
        choices=UVICORN_LOG_LEVELS,
        default=None,
        help="level of the gateway's uvicorn loggers (default: warning)",
    )
    taken = set(parser._option_string_actions)
    for flag, _, kind, text in _worker_flags():
        if flag in taken:
            continue
        if kind == "switch":
            group.add_argument(flag, dest=_dest(flag), action="store_true", help=f"{text} (each worker)")
        elif kind == "toggle":
            action = argparse.BooleanOptionalAction
            group.add_argument(
                flag, dest=_dest(flag), action=action, default=None, help=f"{text} (each worker)"
            )
        else:
            metavar = flag.lstrip("-").replace("-", "_").upper()
            group.add_argument(
                flag, dest=_dest(flag), type=kind, default=None, metavar=metavar, help=f"{text} (each worker)"
            )
    for flag in VLLM_SERVE_FLAGS:
        long = ALIASES.get(flag, flag)
        if flag in parser._option_string_actions or long != flag or flag in OBSERVABILITY:
            continue
        names = [flag, *(a for a, f in ALIASES.items() if f == flag)]
        action = "store_true" if flag.lstrip("-") in SWITCHES else "store"
        group.add_argument(*names, dest=_dest(flag), action=action, default=None, help=argparse.SUPPRESS)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The worker's engine flags given to serve/up that the topology does not forward itself."""
    argv: list[str] = []
    for flag, _, kind, _ in _worker_flags():
        value = getattr(args, _dest(flag), None)
        if value is None or (value is False and kind == "switch"):
            continue
        if kind == "switch":
            argv.append(flag)
        elif kind == "toggle":
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def _check_vllm_flags(args: argparse.Namespace) -> None:
    """ValueError naming the first vLLM flag given that cannot apply; logs the accepted ones' reasons."""
    forwarded = {flag for flag, *_ in _worker_flags()}
    for flag in VLLM_SERVE_FLAGS:
        value = getattr(args, _dest(flag), None)
        if value is None or value is False or flag in ALIASES or flag in forwarded:
            continue
        if flag in ACCEPTED:
            log.info("%s: taken; it changes nothing here: %s", flag, ACCEPTED[flag])
        elif flag in ONLY:
            allowed, reason = ONLY[flag]
            if str(value).lower() not in allowed:
                raise ValueError(f"{flag} {value}: {reason} (only {' or '.join(sorted(allowed))} is taken)")
        else:
            shown = "" if value is True else f" {value}"
            raise ValueError(f"{flag}{shown} is not taken: {REFUSED.get(flag, GENERIC)}")


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
    _check_vllm_flags(args)
    key = api_key_from(args)
    if key:
        os.environ[ENV_API_KEY] = key  # the gateway child inherits it; `ps` never shows it
    if args.uvicorn_log_level:
        os.environ[ENV_UVICORN_LOG_LEVEL] = args.uvicorn_log_level  # the gateway child reads it
    return parse_modules(args.lora_modules)
