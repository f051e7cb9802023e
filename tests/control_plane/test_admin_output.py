"""Admin CLI output when piped: tables keep every value whole; `--output tsv|json` for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from adapter_files import write_adapter
from process import ControlPlaneProcess

from tests.control_plane.conftest import ADMIN_TOKEN


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    deep = root / "adapters" / ("a-folder-name-long-enough-to-push-the-source-column-past-eighty-chars" * 2)
    path = write_adapter(deep / "chat")
    cp = ControlPlaneProcess(root / "data", root / "adapters", ADMIN_TOKEN)
    cp.start()
    try:
        added = run(cp, "adapters", "add", "chat-lora-with-a-rather-long-name", str(path))
        assert added.returncode == 0, added.stderr
        yield cp, str(path)
    finally:
        assert cp.stop() == 0


def run(cp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAPLANE_CONTROL_PLANE": cp.target, "LORAPLANE_ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("COLUMNS", None)
    command = [sys.executable, "-m", "loraplane.control_plane.admin_cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)  # stdout: a pipe


def test_piped_table_keeps_full_values_on_one_line(registered):
    cp, path = registered
    assert len(path) > 120
    out = run(cp, "adapters", "list").stdout
    row = next(line for line in out.splitlines() if "chat-lora-with-a-rather-long-name" in line)
    assert path in row and "…" not in out


def test_tsv_is_a_header_then_one_line_per_row(registered):
    cp, path = registered
    lines = run(cp, "adapters", "list", "--output", "tsv").stdout.splitlines()
    assert lines[0].split("\t") == ["name", "base model", "version", "rank", "source", "loaded"]
    assert len(lines) == 2
    name, base, version, rank, source, loaded = lines[1].split("\t")
    assert (name, base, rank, source, loaded) == ("chat-lora-with-a-rather-long-name", "*", "8", path, "0/0")
    assert run(cp, "workers", "list", "-o", "tsv").stdout.splitlines() == [
        "id\tstate\tbase model\tendpoint\trunning/waiting\tkv\tadapters"
    ]


def test_json_output_and_its_alias_agree(registered):
    cp, path = registered
    by_flag = json.loads(run(cp, "adapters", "list", "-o", "json").stdout)
    assert by_flag == json.loads(run(cp, "adapters", "list", "--json").stdout)
    assert by_flag[0]["source"]["path"] == path


def test_unknown_output_is_a_usage_error(registered):
    cp, _ = registered
    done = run(cp, "adapters", "list", "--output", "yaml")
    assert done.returncode == 2 and "invalid choice: 'yaml'" in done.stderr
