"""The option names of `vllm serve --help` (vLLM 0.10/0.11, every argument group), committed so a test can
walk them: each is taken by `loraplane serve` or refused by name (loraplane.vllm_flags). Short aliases
(`-tp`, `-pp`, `-dp`, `-q`, `-O`) and the `--no-` forms of vLLM's boolean flags are listed beside their flags.
"""

_HELP = """
# frontend
--host --port --uds --uvicorn-log-level --disable-uvicorn-access-log --allow-credentials --allowed-origins
--allowed-methods --allowed-headers --api-key --lora-modules --chat-template --chat-template-content-format
--response-role --ssl-keyfile --ssl-certfile --ssl-ca-certs --enable-ssl-refresh --ssl-cert-reqs --root-path
--middleware --return-tokens-as-token-ids --disable-frontend-multiprocessing --enable-request-id-headers
--enable-auto-tool-choice --exclude-tools-when-tool-choice-none --tool-call-parser --tool-parser-plugin
--tool-server --log-config-file --max-log-len --disable-fastapi-docs --enable-prompt-tokens-details
--enable-server-load-tracking --enable-force-include-usage --enable-tokenizer-info-endpoint
--enable-log-outputs --h11-max-incomplete-event-size --h11-max-header-count --log-error-stack
--api-server-count --config --headless --disable-log-requests --enable-log-requests --disable-log-stats
# model
--model --runner --convert --task --tokenizer --tokenizer-mode --trust-remote-code --dtype --seed
--hf-config-path --allowed-local-media-path --allowed-media-domains --revision --code-revision
--rope-scaling --rope-theta --tokenizer-revision --max-model-len --quantization -q --enforce-eager
--max-seq-len-to-capture --max-logprobs --logprobs-mode --disable-sliding-window --disable-cascade-attn
--skip-tokenizer-init --enable-prompt-embeds --served-model-name --config-format --hf-token --hf-overrides
--pooler-config --override-pooler-config --logits-processor-pattern --generation-config
--override-generation-config --enable-sleep-mode --model-impl --override-attention-dtype --logits-processors
--io-processor-plugin
# load
--load-format --download-dir --model-loader-extra-config --ignore-patterns --use-tqdm-on-load
--pt-load-map-location --safetensors-load-strategy
# structured outputs and reasoning
--guided-decoding-backend --guided-decoding-disable-fallback --guided-decoding-disable-any-whitespace
--guided-decoding-disable-additional-properties --reasoning-parser --structured-outputs-config
# parallelism
--distributed-executor-backend --pipeline-parallel-size -pp --tensor-parallel-size -tp
--decode-context-parallel-size --data-parallel-size -dp --data-parallel-rank --data-parallel-start-rank
--data-parallel-size-local --data-parallel-address --data-parallel-rpc-port --data-parallel-backend
--data-parallel-hybrid-lb --enable-expert-parallel --enable-eplb --eplb-config --num-redundant-experts
--max-parallel-loading-workers --ray-workers-use-nsight --disable-custom-all-reduce --worker-cls
--worker-extension-cls --enable-multimodal-encoder-data-parallel
# cache
--block-size --gpu-memory-utilization --kv-cache-memory-bytes --swap-space --kv-cache-dtype
--num-gpu-blocks-override --enable-prefix-caching --no-enable-prefix-caching --prefix-caching-hash-algo
--cpu-offload-gb --calculate-kv-scales --kv-sharing-fast-prefill --mamba-cache-dtype --mamba-ssm-cache-dtype
# multimodal
--limit-mm-per-prompt --media-io-kwargs --mm-processor-kwargs --mm-processor-cache-gb
--disable-mm-preprocessor-cache --mm-encoder-tp-mode --interleave-mm-strings --skip-mm-profiling
# LoRA
--enable-lora --enable-lora-bias --max-loras --max-lora-rank --lora-extra-vocab-size --lora-dtype
--max-cpu-loras --fully-sharded-loras --default-mm-loras
# observability
--show-hidden-metrics-for-version --otlp-traces-endpoint --collect-detailed-traces
# scheduler
--max-num-batched-tokens --max-num-seqs --max-num-partial-prefills --max-long-partial-prefills
--cuda-graph-sizes --long-prefill-token-threshold --num-lookahead-slots --scheduler-delay-factor
--preemption-mode --num-scheduler-steps --scheduling-policy --enable-chunked-prefill
--no-enable-chunked-prefill --disable-chunked-mm-input --scheduler-cls --disable-hybrid-kv-cache-manager
--async-scheduling --no-async-scheduling
# engine-wide configs
--speculative-config --kv-transfer-config --kv-events-config --compilation-config -O --additional-config
"""
VLLM_SERVE_FLAGS = tuple(line for line in _HELP.split() if line.startswith("-"))
