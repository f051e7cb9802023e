"""The admin CLI end to end: `python -m loraplane adapters|workers ...` against a running control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from process import ControlPlaneProcess

from tests.control_plane.conftest import ADMIN_TOKEN


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "adapters").mkdir()
    cp = ControlPlaneProcess(root / "data", root / "adapters", ADMIN_TOKEN)
    cp.start()
    yield cp, root / "adapters"
    assert cp.stop() == 0


def cli(
    cp,
    *args: str,
    token: str | None = ADMIN_TOKEN,
    address: str | None = None,
    module: str = "loraplane.control_plane.admin_cli",
):
    env = {
        k: v for k, v in os.environ.items() if k not in ("LORAPLANE_ADMIN_TOKEN", "LORAPLANE_CONTROL_PLANE")
    }
    env["LORAPLANE_CONTROL_PLANE"] = address or cp.target
    if token is not None:
        env["LORAPLANE_ADMIN_TOKEN"] = token
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_add_list_show_rm(control_plane):
    from adapter_files import write_adapter

    cp, root = control_plane
    path = write_adapter(root / "chat")
    # Once through the `loraplane` entry point (slow: it loads every subcommand), then the admin CLI alone.
    added = cli(
        cp, "adapters", "add", "chat-lora", str(path), "--base-model", "tiny-llama", module="loraplane"
    )
    assert added.returncode == 0, added.stderr
    assert "chat-lora" in added.stdout and "no worker" in added.stdout
    listed = cli(cp, "adapters", "list", "--json")
    assert listed.returncode == 0 and [a["name"] for a in json.loads(listed.stdout)] == ["chat-lora"]
    shown = cli(cp, "adapters", "show", "chat-lora", "--json")
    assert json.loads(shown.stdout)["rank"] == 8
    assert "chat-lora" in cli(cp, "adapters", "list").stdout  # rich table
    duplicate = cli(cp, "adapters", "add", "chat-lora", str(path))
    assert (
        duplicate.returncode == 1 and "ALREADY_EXISTS" in duplicate.stderr and "--replace" in duplicate.stderr
    )
    new_path = str(write_adapter(root / "chat2", seed=9))
    replaced = cli(
        cp, "adapters", "add", "chat-lora", new_path, "--replace", "--base-model", "tiny-llama", "--json"
    )
    assert replaced.returncode == 0 and json.loads(replaced.stdout)["replaced"] is True
    removed = cli(cp, "adapters", "rm", "chat-lora")
    assert removed.returncode == 0 and "deleted chat-lora" in removed.stdout
    missing = cli(cp, "adapters", "show", "chat-lora")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_errors_and_exit_codes(control_plane, tmp_path):
    cp, root = control_plane
    outside = cli(cp, "adapters", "add", "x", str(tmp_path))
    assert (
        outside.returncode == 1 and "INVALID_ARGUMENT" in outside.stderr and "adapter roots" in outside.stderr
    )
    no_token = cli(cp, "adapters", "rm", "x", token=None)
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr
    assert ADMIN_TOKEN not in no_token.stderr
    usage = cli(cp, "adapters", "frobnicate")
    assert usage.returncode == 2
    unreachable = cli(cp, "workers", "list", "--timeout", "1", address="127.0.0.1:1")
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
    workers = cli(cp, "workers", "list", "--all", "--json")
    assert workers.returncode == 0 and json.loads(workers.stdout) == []


def test_the_admin_token_comes_from_the_environment_or_a_file_never_an_argument(control_plane, tmp_path):
    """D16: a secret on the command line is visible to every local user through `ps`."""
    cp, _ = control_plane
    as_argument = cli(cp, "adapters", "rm", "x", "--admin-token", ADMIN_TOKEN, token=None)
    assert as_argument.returncode == 2 and "not accepted" in as_argument.stderr
    assert ADMIN_TOKEN not in as_argument.stderr
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    from_file = cli(cp, "adapters", "rm", "x", "--admin-token-file", str(token_file), token=None)
    assert from_file.returncode == 1 and "NOT_FOUND" in from_file.stderr  # authenticated, no such adapter
    unreadable = cli(cp, "adapters", "rm", "x", "--admin-token-file", str(tmp_path / "nope"), token=None)
    assert unreadable.returncode == 1 and "cannot read --admin-token-file" in unreadable.stderr
