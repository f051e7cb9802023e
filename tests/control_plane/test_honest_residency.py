"""Honest residency: a worker that is down or disconnected is never counted as holding adapters, in the
registry's answers and in `loraplane adapters list|show`; a worker's device kind reaches the control plane."""

from __future__ import annotations

import argparse
import asyncio

from loraplane.control_plane.admin_cli import adapters as adapters_cli
from loraplane.control_plane.convert import hello_info
from loraplane.control_plane.records import Residency, ResidencyState, WorkerRecord, WorkerState
from loraplane.control_plane.server import ControlPlaneServer
from loraplane.control_plane.sqlite_store import SQLiteStore
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.worker.v1 import worker_pb2 as wk
from tests.control_plane.conftest import ADMIN, ADMIN_TOKEN, BASE_MODEL, make_config


async def residency(registry, name: str) -> dict[str, int]:
    adapter = (await registry.GetAdapter(reg.GetAdapterRequest(name=name))).adapter
    return {r.worker_id: r.state for r in adapter.residency}


async def eventually(check, timeout_s: float = 10.0):
    for _ in range(int(timeout_s / 0.05)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


def admin_cli(target: str, *argv: str) -> int:
    """`loraplane adapters ARGV --control-plane TARGET`, in process (output through capsys: a pipe)."""
    parser = argparse.ArgumentParser()
    adapters_cli.add_arguments(parser)
    return adapters_cli.run(parser.parse_args([*argv, "--control-plane", target]))


async def test_a_worker_that_leaves_is_not_counted(registry, workers, make_adapter, target, capsys):
    w0, w1 = await workers("w0"), await workers("w1")
    adapter = reg.Adapter(name="a", source=reg.AdapterSource(path=str(make_adapter("a"))))
    adapter.base_model_name = BASE_MODEL
    await registry.CreateAdapter(reg.CreateAdapterRequest(adapter=adapter), metadata=ADMIN)
    assert set(await residency(registry, "a")) == {"w0", "w1"}
    assert await asyncio.to_thread(admin_cli, target, "list") == 0
    assert "2/2" in capsys.readouterr().out

    await w1.stop()  # its stream ends: it is down and holds nothing we can vouch for
    await eventually(lambda: _only(registry, "a", {"w0"}))
    listed = await registry.ListWorkers(reg.ListWorkersRequest(include_down=True))
    down = next(w for w in listed.workers if w.worker_id == "w1")
    assert down.state == reg.WORKER_STATE_DOWN and not down.adapters
    assert await asyncio.to_thread(admin_cli, target, "list") == 0
    assert "1/1" in capsys.readouterr().out
    assert await asyncio.to_thread(admin_cli, target, "show", "a") == 0
    shown = capsys.readouterr().out
    assert "w0" in shown and "w1" not in shown

    w0.send_heartbeats = False  # silent past the heartbeat timeout: marked down, residency dropped
    await eventually(lambda: _only(registry, "a", set()))
    w0.send_heartbeats = True
    await eventually(lambda: _only(registry, "a", {"w0"}))  # it reconnects and reports again


async def _only(registry, name: str, workers: set[str]) -> bool:
    return set(await residency(registry, name)) == workers


async def test_a_restarted_control_plane_claims_no_residency_until_workers_report(tmp_path, adapter_root):
    config = make_config(tmp_path, adapter_root, admin_token=ADMIN_TOKEN)
    store = SQLiteStore.in_dir(config.data_dir)
    store.upsert_worker(WorkerRecord("gone", BASE_MODEL, "127.0.0.1:9", WorkerState.READY))
    store.set_residency(Residency("gone", "a", "v1", ResidencyState.DEVICE, "", 1.0))
    store.close()
    server = ControlPlaneServer(config)
    await server.start()
    try:
        assert server.store.residency_for_worker("gone") == []
        assert server.store.get_worker("gone").state == WorkerState.DOWN
    finally:
        await server.stop()


def test_hello_carries_the_device_kind():
    hello = wk.Hello(worker_id="w", base_model_name=BASE_MODEL, endpoint="127.0.0.1:1", device="cpu")
    assert hello_info(hello).device == "cpu"
    assert hello_info(wk.Hello(worker_id="w")).device == ""  # an older worker: unknown
