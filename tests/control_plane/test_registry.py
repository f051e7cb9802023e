"""AdapterRegistry end to end over loopback gRPC with fake workers speaking the real stream protocol."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from loraplane.common.v1 import residency_pb2 as residency
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.worker.v1 import worker_pb2 as wk
from tests.control_plane.conftest import ADMIN, BASE_MODEL


def create_request(name: str, path, base: str = BASE_MODEL, replace: bool = False, timeout_ms: int = 0):
    adapter = reg.Adapter(name=name, source=reg.AdapterSource(path=str(path)), base_model_name=base)
    return reg.CreateAdapterRequest(adapter=adapter, replace=replace, rollout_timeout_ms=timeout_ms)


async def test_create_loads_on_every_matching_worker(registry, workers, make_adapter):
    w0, w1 = await workers("w0"), await workers("w1")
    other = await workers("w2", base_model="other-model")
    response = await registry.CreateAdapter(create_request("sql-lora", make_adapter("sql")), metadata=ADMIN)
    assert sorted(response.loaded_workers) == ["w0", "w1"]
    assert not response.failed_workers and not response.pending_workers
    version = response.adapter.version
    assert w0.adapters == {"sql-lora": version} and w1.adapters == {"sql-lora": version}
    assert other.adapters == {} and "load_adapter" not in other.kinds()
    got = (await registry.GetAdapter(reg.GetAdapterRequest(name="sql-lora"))).adapter
    assert [(r.worker_id, r.state, r.version) for r in got.residency] == [
        ("w0", residency.RESIDENCY_STATE_HOST, version),
        ("w1", residency.RESIDENCY_STATE_HOST, version),
    ]
    assert got.rank == 8 and list(got.target_modules) == ["q_proj", "v_proj"]
    listed = await registry.ListAdapters(reg.ListAdaptersRequest())
    assert [a.name for a in listed.adapters] == ["sql-lora"] and len(listed.adapters[0].residency) == 2


async def test_delete_unloads_everywhere(registry, workers, make_adapter):
    w0, w1 = await workers("w0"), await workers("w1")
    await registry.CreateAdapter(create_request("a", make_adapter("a")), metadata=ADMIN)
    response = await registry.DeleteAdapter(reg.DeleteAdapterRequest(name="a"), metadata=ADMIN)
    assert sorted(response.unloaded_workers) == ["w0", "w1"] and response.adapter.name == "a"
    await w0.wait_until(lambda w: "unload_adapter" in w.kinds())
    await w1.wait_until(lambda w: "unload_adapter" in w.kinds())
    assert w0.adapters == {} and w1.adapters == {}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.GetAdapter(reg.GetAdapterRequest(name="a"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    missing = await registry.DeleteAdapter(
        reg.DeleteAdapterRequest(name="a", allow_missing=True), metadata=ADMIN
    )
    assert not missing.HasField("adapter")


async def test_no_worker_stores_and_late_worker_syncs(registry, workers, make_adapter):
    response = await registry.CreateAdapter(create_request("late", make_adapter("late")), metadata=ADMIN)
    assert not response.loaded_workers and "no worker" in response.message
    worker = await workers("w-late")
    await worker.wait_until(lambda w: "late" in w.adapters)
    assert worker.kinds()[0] == "sync" and worker.received[0].heartbeat_interval_s == 1
    await worker.wait_until(lambda w: True)
    got = (await registry.GetAdapter(reg.GetAdapterRequest(name="late"))).adapter
    assert [r.worker_id for r in got.residency] == ["w-late"]


async def test_reconnect_after_missed_changes_converges(registry, workers, make_adapter):
    worker = await workers("w0")
    await registry.CreateAdapter(create_request("keep", make_adapter("keep")), metadata=ADMIN)
    await registry.CreateAdapter(create_request("drop", make_adapter("drop", seed=1)), metadata=ADMIN)
    await worker.stop()
    await registry.DeleteAdapter(reg.DeleteAdapterRequest(name="drop"), metadata=ADMIN)
    await registry.CreateAdapter(create_request("new", make_adapter("new", seed=2)), metadata=ADMIN)
    await worker.start()
    await worker.wait_until(lambda w: set(w.adapters) == {"keep", "new"})


async def test_all_workers_reject_rolls_back(registry, workers, make_adapter):
    await workers("w0", max_lora_rank=8)
    await workers("w1", max_lora_rank=8)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request("big", make_adapter("big", r=32)), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "RANK_TOO_LARGE" in info.value.details() and "w0" in info.value.details()
    assert (await registry.ListAdapters(reg.ListAdaptersRequest())).total_size == 0


async def test_base_model_mismatch_reported_by_workers(registry, workers, make_adapter):
    await workers("w0")
    path = make_adapter("mm", base_model_name_or_path="some-other-model")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request("mm", path), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "BASE_MODEL_MISMATCH" in info.value.details()


async def test_partial_reject_keeps_record_and_reports(registry, workers, make_adapter):
    await workers("w0")
    await workers("w1", reject={"p": (wk.COMMAND_ERROR_CODE_CAPACITY, "cache full of pinned adapters")})
    response = await registry.CreateAdapter(create_request("p", make_adapter("p")), metadata=ADMIN)
    assert list(response.loaded_workers) == ["w0"] and list(response.failed_workers) == ["w1"]
    failed = [r for r in response.adapter.residency if r.worker_id == "w1"][0]
    assert failed.state == residency.RESIDENCY_STATE_FAILED and "CAPACITY: cache full" in failed.error


async def test_pending_worker_reported_after_deadline(registry, workers, make_adapter):
    await workers("slow", load_delay_s=1.0)
    request = create_request("s", make_adapter("s"), timeout_ms=100)
    response = await registry.CreateAdapter(request, metadata=ADMIN)
    assert list(response.pending_workers) == ["slow"] and "still loading" in response.message


async def test_rollout_wait_respects_the_callers_deadline(registry, workers, make_adapter):
    await workers("slow", load_delay_s=3.0)
    response = await registry.CreateAdapter(
        create_request("d", make_adapter("d")), metadata=ADMIN, timeout=1.0
    )
    assert list(response.pending_workers) == ["slow"]


async def test_replace_stages_everywhere_then_activates(registry, workers, make_adapter):
    w0, w1 = await workers("w0"), await workers("w1")
    first = await registry.CreateAdapter(create_request("r", make_adapter("r1")), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request("r", make_adapter("r2", seed=5)), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS and "--replace" in info.value.details()
    second = await registry.CreateAdapter(
        create_request("r", make_adapter("r2", seed=5), replace=True), metadata=ADMIN
    )
    assert second.replaced and second.adapter.version != first.adapter.version
    for worker in (w0, w1):
        loads = [m.load_adapter for m in worker.received if m.WhichOneof("message") == "load_adapter"]
        assert [(m.stage_only, m.activate) for m in loads] == [(False, False), (True, False), (False, True)]
        assert worker.adapters == {"r": second.adapter.version} and worker.staged == {}
    assert second.adapter.create_time == first.adapter.create_time


async def test_replace_aborts_when_one_worker_rejects(registry, workers, make_adapter):
    w0 = await workers("w0")
    w1 = await workers("w1", max_lora_rank=8)
    first = await registry.CreateAdapter(create_request("r", make_adapter("r1")), metadata=ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(
            create_request("r", make_adapter("r2", r=16), replace=True), metadata=ADMIN
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "aborted" in info.value.details()
    await w0.wait_until(lambda w: not w.staged)
    assert w0.adapters == w1.adapters == {"r": first.adapter.version}
    got = (await registry.GetAdapter(reg.GetAdapterRequest(name="r"))).adapter
    assert got.version == first.adapter.version


async def test_list_pages(registry, make_adapter):
    path = make_adapter("x")
    for i in range(5):
        await registry.CreateAdapter(create_request(f"a{i}", path), metadata=ADMIN)
    first = await registry.ListAdapters(reg.ListAdaptersRequest(page_size=2))
    second = await registry.ListAdapters(
        reg.ListAdaptersRequest(page_size=2, page_token=first.next_page_token)
    )
    third = await registry.ListAdapters(
        reg.ListAdaptersRequest(page_size=2, page_token=second.next_page_token)
    )
    names = [a.name for page in (first, second, third) for a in page.adapters]
    assert names == [f"a{i}" for i in range(5)] and third.next_page_token == "" and first.total_size == 5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.ListAdapters(reg.ListAdaptersRequest(page_token="@@not-a-token"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_workers(registry, workers):
    await workers("w0")
    listed = await registry.ListWorkers(reg.ListWorkersRequest())
    assert [(w.worker_id, w.state, w.base_model_name) for w in listed.workers] == [
        ("w0", reg.WORKER_STATE_READY, BASE_MODEL)
    ]
    assert listed.workers[0].max_loras == 4


@pytest.mark.timeout(30)
async def test_a_slow_validation_blocks_no_read_nor_exit_and_a_cancelled_create_frees_its_name(
    registry, make_adapter, monkeypatch
):
    from loraplane.control_plane import sources

    release, started, daemon = threading.Event(), threading.Event(), []
    check = sources.check_adapter_dir

    def slow_check(*args):
        daemon.append(threading.current_thread().daemon)  # an abandoned check cannot hold up an exit
        started.set()
        release.wait(20)
        return check(*args)

    monkeypatch.setattr(sources, "check_adapter_dir", slow_check)
    call = registry.CreateAdapter(create_request("slow", make_adapter("slow")), metadata=ADMIN)
    task = asyncio.ensure_future(call)
    await asyncio.to_thread(started.wait, 10)
    assert (await registry.ListAdapters(reg.ListAdaptersRequest(), timeout=5)).total_size == 0
    call.cancel()  # the caller gives up: the name's lock is released while the check still runs
    delete = reg.DeleteAdapterRequest(name="slow", allow_missing=True)
    assert not (await registry.DeleteAdapter(delete, metadata=ADMIN, timeout=5)).HasField("adapter")
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert daemon == [True]
