"""End to end: a real `loraplane worker` process (demo model, CPU) on loopback, driven over gRPC from
Python and Node.js, connected to a fake control plane that reads its heartbeats."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from worker_process import (
    ENGINE_ARGS,
    REPO,
    WorkerProcess,
    collect,
    engine_flags,
    generate_request,
    inference_stub,
)

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.worker.v1 import worker_pb2 as wk

ADAPTER = "sql-lora"
BASE_PROMPTS = [
    "The capital of France is",
    "SELECT name FROM users WHERE",
    "Once upon a time",
    "def fibonacci(n):",
    "List three colors:",
    "Water boils at",
    "Dear Sir or Madam,",
    "Q: 2 + 2 = ?\nA:",
]
# 64 streams: every prompt with and without the adapter, several seeds; every 8th asks for n=2.
CASES = [
    dict(prompt=BASE_PROMPTS[i % 8], adapter=(i // 8) % 2 == 1, seed=i, n=2 if i % 8 == 7 else 1)
    for i in range(64)
]
MAX_TOKENS = 8


def sampling(case: dict) -> dict:
    return dict(n=case["n"], max_tokens=MAX_TOKENS, temperature=0.8, top_p=0.95, seed=case["seed"])


@pytest.fixture(scope="module")
def offline_texts(demo_model_path: str, demo_adapters: dict[str, str]) -> list[list[str]]:
    """The offline API's texts for CASES (computed before the worker starts; the model is then freed)."""
    from loraplane.inference_worker import LLM, SamplingParams
    from loraplane.inference_worker.lora import LoRARequest

    llm = LLM(demo_model_path, enable_lora=True, max_loras=2, **ENGINE_ARGS)
    lora = LoRARequest(ADAPTER, 1, demo_adapters[ADAPTER])
    outputs = llm.generate(
        [c["prompt"] for c in CASES],
        [SamplingParams(**sampling(c)) for c in CASES],
        lora_request=[lora if c["adapter"] else None for c in CASES],
    )
    del llm
    gc.collect()
    return [[o.text for o in sorted(out.outputs, key=lambda o: o.index)] for out in outputs]


@pytest.fixture(scope="module")
async def worker(offline_texts, fake_cp, demo_adapters, tmp_path_factory):
    fake_cp.desired = [wk.AdapterSpec(name=ADAPTER, source=demo_adapters[ADAPTER])]
    static = json.dumps(
        {"name": ADAPTER, "path": demo_adapters[ADAPTER], "base_model_name": "SmolLM2-135M-Instruct"}
    )
    args = [
        *engine_flags(),
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
        "--max-queue-len", "16", "--shutdown-grace-s", "5",
        "--lora-modules", static,
        "--control-plane", fake_cp.target, "--worker-id", "w-e2e",
    ]  # fmt: skip
    process = WorkerProcess(args, tmp_path_factory.mktemp("worker") / "worker.log")
    await process.start()
    yield process
    assert await process.stop() == 0, process.log()


@pytest.fixture
async def stub(worker):
    channel, stub = inference_stub(worker.target)
    async with channel:
        yield stub


async def test_health_serving_and_reflection(worker):
    async with grpc.aio.insecure_channel(worker.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "loraplane.inference.v1.Inference"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in replies for s in r.list_services_response.service]
        assert "loraplane.inference.v1.Inference" in names and "grpc.health.v1.Health" in names


async def test_list_models_has_vllm_lineage(stub, demo_model_path, demo_adapters):
    reply = await stub.ListModels(pb.ListModelsRequest())
    base, adapter = reply.models
    assert (base.id, base.parent, base.root) == ("SmolLM2-135M-Instruct", "", demo_model_path)
    assert (adapter.id, adapter.parent, adapter.root) == (ADAPTER, base.id, demo_adapters[ADAPTER])
    assert len(adapter.version) == 64 and base.max_model_len == ENGINE_ARGS["max_model_len"]


async def test_tokenize_text_and_chat(stub):
    from transformers import AutoTokenizer

    from loraplane.inference_worker.demo import demo_model_path

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    reply = await stub.Tokenize(pb.TokenizeRequest(model=ADAPTER, text="Hello world"))
    assert list(reply.token_ids) == tokenizer.encode("Hello world") and reply.count == len(reply.token_ids)
    chat = pb.ChatInput(messages=[pb.ChatMessage(role="user", content="Hi!")])
    reply = await stub.Tokenize(pb.TokenizeRequest(chat=chat))
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi!"}], tokenize=False, add_generation_prompt=True
    )
    assert list(reply.token_ids) == tokenizer.encode(rendered, add_special_tokens=False)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
async def test_node_client_streams_and_lists_models(worker):
    script = REPO / "tests" / "node" / "worker_client.js"
    args = [
        "node",
        str(script),
        str(REPO / "protos"),
        worker.target,
        ADAPTER,
        "The capital of France is",
        "6",
    ]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [m["id"] for m in result["models"]] == ["SmolLM2-135M-Instruct", ADAPTER]
    assert result["messages"][0] == "start" and result["messages"][-1] == "usage"
    # The client asks for ignore_eos: the trained sql-lora adapter ends " Paris." with EOS after 3
    # tokens, so without it the finish reason would depend on the adapter's weights.
    assert result["finish_reason"] == "FINISH_REASON_LENGTH" and result["text"]
    assert result["usage"]["completion_tokens"] == 6


async def test_64_concurrent_streams_match_offline_api(stub, offline_texts):
    calls = [
        stub.Generate(generate_request(c["prompt"], ADAPTER if c["adapter"] else "", **sampling(c)))
        for c in CASES
    ]
    results = await asyncio.gather(*(collect(call) for call in calls))
    assert [r["texts"] for r in results] == offline_texts
    assert {r["start"].model for r, c in zip(results, CASES, strict=True) if c["adapter"]} == {ADAPTER}
    assert offline_texts[0] != offline_texts[8], "the adapter must change the output"


async def test_cancelling_half_frees_their_kv_blocks(stub, fake_cp):
    idle = await fake_cp.wait_heartbeat(lambda hb: hb.num_running == 0 and hb.num_waiting == 0)
    params = dict(temperature=0, ignore_eos=True)
    doomed = [
        stub.Generate(generate_request(f"Story {i}: once upon a time", max_tokens=400, **params))
        for i in range(8)
    ]
    kept = [
        stub.Generate(generate_request(f"Count to ten, take {i}:", max_tokens=12, **params)) for i in range(8)
    ]
    started = {}
    for call in doomed + kept:
        started[call] = [await call.read(), await call.read()]
        assert [m.WhichOneof("response") for m in started[call]] == ["start", "chunk"]
    await fake_cp.wait_heartbeat(lambda hb: hb.kv_usage > idle.kv_usage and hb.num_running >= 8)
    for call in doomed:
        call.cancel()
    for result in await asyncio.gather(*(collect(call, started[call]) for call in kept)):
        assert result["finish"] == {0: pb.FINISH_REASON_LENGTH}
    for call in doomed:
        assert call.cancelled()
    # The doomed requests would run ~400 more steps if not aborted; their blocks must be free now.
    after = await fake_cp.wait_heartbeat(lambda hb: hb.num_running == 0 and hb.num_waiting == 0, timeout=20)
    assert after.kv_usage == pytest.approx(idle.kv_usage)


async def test_deadline_aborts_the_request(stub, fake_cp):
    call = stub.Generate(generate_request("A very long story:", max_tokens=400, ignore_eos=True), timeout=2.0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await fake_cp.wait_heartbeat(lambda hb: hb.num_running == 0 and hb.num_waiting == 0, timeout=10)


INVALID = [
    (dict(model="no-such-model"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
    (
        dict(sampling_params=pb.SamplingParams(temperature=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "temperature",
    ),
    (dict(sampling_params=pb.SamplingParams(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    (dict(sampling_params=pb.SamplingParams(n=0)), grpc.StatusCode.INVALID_ARGUMENT, "n"),
    (dict(text=""), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (dict(text="word " * 600), grpc.StatusCode.INVALID_ARGUMENT, "max_model_len"),
    (
        dict(sampling_params=pb.SamplingParams(max_tokens=600)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "maximum context length is 512 tokens",
    ),
    (dict(token_ids=pb.TokenIds(ids=[10**7])), grpc.StatusCode.INVALID_ARGUMENT, "token ids"),
    (  # an IndexError in the step loop killed the engine for good
        dict(sampling_params=pb.SamplingParams(stop_token_ids=[49152], min_tokens=1, max_tokens=2)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stop_token_ids must be in [0, 49152)",
    ),
    (dict(sampling_params=pb.SamplingParams(n=20000)), grpc.StatusCode.INVALID_ARGUMENT, "max_num_seqs"),
]


@pytest.mark.parametrize(("fields", "code", "words"), INVALID)
async def test_invalid_requests_get_clear_errors(stub, fields, code, words):
    request = pb.GenerateRequest(text="Hello", sampling_params=pb.SamplingParams(max_tokens=2))
    for key, value in fields.items():
        if isinstance(value, str) or key == "model":
            setattr(request, key, value)
        else:
            getattr(request, key).CopyFrom(value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(request))
    assert info.value.code() == code and words in info.value.details()
    ok = await collect(stub.Generate(generate_request("Hello", max_tokens=2)))  # still serving
    assert ok["finish"] == {0: pb.FINISH_REASON_LENGTH}
