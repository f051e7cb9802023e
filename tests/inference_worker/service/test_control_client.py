"""The worker under a (fake) control plane: Hello, Sync, LoadAdapter/UnloadAdapter results, staged
replaces, unloading under load, heartbeats, and reconnecting after the control plane restarts."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from worker_process import WorkerProcess, collect, engine_flags, generate_request, inference_stub

from loraplane.common.v1 import residency_pb2 as residency
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.worker.v1 import worker_pb2 as wk


@pytest.fixture(scope="module")
async def worker(fake_cp, demo_adapters, tmp_path_factory):
    fake_cp.desired = [wk.AdapterSpec(name="sql-lora", source=demo_adapters["sql-lora"])]
    args = [*engine_flags(), "--enable-lora", "--max-loras", "2", "--control-plane", fake_cp.target]
    process = WorkerProcess(
        [*args, "--worker-id", "w-control"], tmp_path_factory.mktemp("worker") / "worker.log"
    )
    await process.start()
    await fake_cp.wait_for(lambda: any(r.command_id.startswith("sync") for r in fake_cp.results.values()))
    yield process
    assert await process.stop() == 0, process.log()


@pytest.fixture
async def stub(worker):
    channel, stub = inference_stub(worker.target)
    async with channel:
        yield stub


async def model_ids(stub) -> dict[str, pb.ModelCard]:
    return {card.id: card for card in (await stub.ListModels(pb.ListModelsRequest())).models}


def load(name: str, source: str, version: str = "", **flags) -> wk.ConnectResponse:
    return wk.ConnectResponse(
        load_adapter=wk.LoadAdapter(
            adapter=wk.AdapterSpec(name=name, source=source, version=version), **flags
        )
    )


def unload(name: str) -> wk.ConnectResponse:
    return wk.ConnectResponse(unload_adapter=wk.UnloadAdapter(name=name))


async def test_hello_then_sync_loads_the_desired_adapters(worker, fake_cp, stub, demo_adapters):
    hello = fake_cp.hellos[0]
    assert (hello.worker_id, hello.base_model_name, hello.endpoint) == (
        "w-control",
        "SmolLM2-135M-Instruct",
        worker.target,
    )
    capacity = hello.capacity
    assert (capacity.max_loras, capacity.max_lora_rank, capacity.max_model_len) == (2, 16, 512)
    assert capacity.enable_lora and capacity.num_kv_blocks > 0 and hello.software_version
    sync_result = next(r for r in fake_cp.results.values() if r.command_id.startswith("sync"))
    assert sync_result.ok and [a.name for a in sync_result.resident_adapters] == ["sql-lora"]
    assert (await model_ids(stub))["sql-lora"].root == demo_adapters["sql-lora"]


@pytest.mark.parametrize(
    ("adapter", "version", "code"),
    [
        ("/no/such/adapter", "", wk.COMMAND_ERROR_CODE_SOURCE_NOT_FOUND),
        ("rank-32", "", wk.COMMAND_ERROR_CODE_RANK_TOO_LARGE),
        ("other-lora", "0" * 64, wk.COMMAND_ERROR_CODE_VERSION_MISMATCH),
    ],
)
async def test_failed_loads_answer_typed_errors(fake_cp, stub, demo_adapters, adapter, version, code):
    result = await fake_cp.command(load("broken", demo_adapters.get(adapter, adapter), version))
    assert not result.ok and result.error_code == code and result.error_message
    assert "broken" not in await model_ids(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(generate_request("Hi", "broken", max_tokens=2)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unload_lets_running_requests_finish_and_refuses_new_ones(fake_cp, stub, demo_adapters):
    assert (await fake_cp.command(load("doomed", demo_adapters["other-lora"]))).ok
    params = dict(max_tokens=24, temperature=0, ignore_eos=True)
    calls = [stub.Generate(generate_request(f"Request {i}:", "doomed", **params)) for i in range(4)]
    started = {call: [await call.read(), await call.read()] for call in calls}
    result = await fake_cp.command(unload("doomed"))
    assert result.ok and "doomed" not in [a.name for a in result.resident_adapters]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(generate_request("Hi", "doomed", max_tokens=2)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "doomed" in info.value.details()
    for call in calls:
        finished = await collect(call, started[call])
        assert finished["finish"] == {0: pb.FINISH_REASON_LENGTH}
    again = await fake_cp.command(unload("doomed"))
    assert not again.ok and again.error_code == wk.COMMAND_ERROR_CODE_NOT_FOUND


async def test_staged_replace_switches_only_on_activate(fake_cp, stub, demo_adapters):
    before = (await model_ids(stub))["sql-lora"]
    staged = await fake_cp.command(load("sql-lora", demo_adapters["other-lora"], stage_only=True))
    assert staged.ok and (await model_ids(stub))["sql-lora"].version == before.version
    ok = await collect(stub.Generate(generate_request("Hi", "sql-lora", max_tokens=2)))
    assert ok["finish"] == {0: pb.FINISH_REASON_LENGTH}
    reported = {a.name: a.version for a in staged.resident_adapters}
    assert reported["sql-lora"] == before.version, "residency reports the serving version until activation"
    activated = await fake_cp.command(load("sql-lora", demo_adapters["other-lora"], activate=True))
    after = (await model_ids(stub))["sql-lora"]
    assert activated.ok and after.version != before.version and after.root == demo_adapters["other-lora"]


async def test_sync_reconciles_to_the_desired_set(fake_cp, stub, demo_adapters):
    spec = wk.AdapterSpec(name="fresh-lora", source=demo_adapters["sql-lora"])
    result = await fake_cp.command(wk.ConnectResponse(sync=wk.Sync(adapters=[spec])))
    assert result.ok and [a.name for a in result.resident_adapters] == ["fresh-lora"]
    assert list(await model_ids(stub)) == ["SmolLM2-135M-Instruct", "fresh-lora"]
    heartbeat = await fake_cp.wait_heartbeat(
        lambda hb: [a.name for a in hb.resident_adapters] == ["fresh-lora"]
    )
    assert heartbeat.resident_adapters[0].state in (
        residency.RESIDENCY_STATE_DEVICE,
        residency.RESIDENCY_STATE_HOST,
    )
    assert not heartbeat.draining


async def test_keeps_serving_without_the_control_plane_and_reconnects(fake_cp, stub, demo_adapters):
    port = fake_cp.port
    await fake_cp.stop()
    fake_cp.desired = [wk.AdapterSpec(name="fresh-lora", source=demo_adapters["sql-lora"])]
    ok = await collect(stub.Generate(generate_request("Hi", "fresh-lora", max_tokens=2)))
    assert ok["finish"] == {0: pb.FINISH_REASON_LENGTH}
    await asyncio.sleep(1.0)
    await fake_cp.start(port)
    hello = await fake_cp.wait_hello(count=len(fake_cp.hellos) + 1, timeout=30)
    assert [a.name for a in hello.resident_adapters] == ["fresh-lora"]
