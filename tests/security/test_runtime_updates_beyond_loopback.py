"""A gateway with runtime LoRA updating on, listening beyond loopback, starts only in front of a control
plane that refuses tokenless writes (on loopback an open control plane stays accepted: zero setup)."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from loraplane.control_plane.config import ControlPlaneConfig
from loraplane.control_plane.server import ControlPlaneServer
from loraplane.gateway import cli
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway


async def _control_plane(tmp_path, admin_token: str) -> ControlPlaneServer:
    config = ControlPlaneConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", admin_token=admin_token)
    server = ControlPlaneServer(config)
    await server.start()
    return server


def _gateway(host: str, control_plane: ControlPlaneServer) -> BackgroundGateway:
    config = GatewayConfig(
        host=host,
        port=0,
        control_plane=f"127.0.0.1:{control_plane.port}",
        allow_runtime_lora_updating=True,
    )
    return BackgroundGateway(config)


@pytest.mark.parametrize(
    ("host", "admin_token", "starts"),
    [
        ("0.0.0.0", "", False),
        ("0.0.0.0", "guarded", True),
        ("127.0.0.1", "", True),
    ],
)
async def test_runtime_updates_beyond_loopback_need_a_guarded_control_plane(
    tmp_path, host, admin_token, starts
):
    control_plane = await _control_plane(tmp_path, admin_token)
    gateway = _gateway(host, control_plane)
    try:
        if starts:
            await gateway.start()
            await gateway.stop()
        else:
            with pytest.raises(RuntimeError):
                await gateway.start()
    finally:
        await control_plane.stop()


async def test_the_gateway_command_exits_non_zero_and_says_why(tmp_path, capsys, monkeypatch):
    control_plane = await _control_plane(tmp_path, "")
    monkeypatch.setenv("LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING", "true")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--host", "0.0.0.0", "--port", "0", "--control-plane", f"127.0.0.1:{control_plane.port}"]
    try:
        code = await asyncio.to_thread(cli.run, parser.parse_args(argv))
    finally:
        await control_plane.stop()
    assert code == 1 and "needs a control plane with an admin token" in capsys.readouterr().err
