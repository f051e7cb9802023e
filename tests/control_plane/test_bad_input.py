"""Every bad input gets its status and a message a person can act on; the store stays unchanged."""

from __future__ import annotations

import os

import grpc
import pytest
from test_registry import create_request

from loraplane.registry.v1 import registry_pb2 as reg
from tests.control_plane.conftest import ADMIN, BASE_MODEL
from tests.loraplane.adapter_format.bad_files import MALFORMED_HEADERS, WEIGHTS, link_outside


def _not_peft(root):
    folder = root / "not-peft"
    folder.mkdir()
    (folder / "README.md").write_text("no adapter here")
    return folder


def _bad_config(root):
    from adapter_files import write_adapter

    return write_adapter(root / "dora", use_dora=True)


def _symlink_out(root):
    from adapter_files import write_adapter

    outside = write_adapter(root.parent / "outside-lora")
    link = root / "sneaky"
    os.symlink(outside, link)
    return link


def _json_array_header(root):
    from adapter_files import write_adapter

    (write_adapter(root / "array-header") / WEIGHTS).write_bytes(MALFORMED_HEADERS["json-array"])
    return "array-header"


def _linked_out(name):
    def build(root):
        from adapter_files import write_adapter

        link_outside(write_adapter(root / f"linked-{name}"), name, root.parent / "outside-files")
        return f"linked-{name}"

    return build


def _regex_bomb(root):
    from adapter_files import write_adapter

    write_adapter(root / "bomb", target_modules="(.|.)*Z")  # hours of backtracking under Python's re
    return "bomb"


CASES = [
    # (adapter name, source path builder, code, words in the message)
    ("dup", lambda root: root / "good", grpc.StatusCode.ALREADY_EXISTS, "already exists"),
    ("missing", lambda root: root / "nope", grpc.StatusCode.NOT_FOUND, "does not exist"),
    ("notpeft", _not_peft, grpc.StatusCode.INVALID_ARGUMENT, "adapter_config.json"),
    ("dora", _bad_config, grpc.StatusCode.INVALID_ARGUMENT, "DoRA"),
    (
        "outside",
        lambda root: root.parent,
        grpc.StatusCode.INVALID_ARGUMENT,
        "outside the allowed adapter roots",
    ),
    ("dots", lambda root: f"{root}/../../etc", grpc.StatusCode.INVALID_ARGUMENT, "outside the allowed"),
    ("reldots", lambda root: "good/../../..", grpc.StatusCode.INVALID_ARGUMENT, "outside the allowed"),
    ("symlink", _symlink_out, grpc.StatusCode.INVALID_ARGUMENT, "outside the allowed"),
    ("json-array", _json_array_header, grpc.StatusCode.INVALID_ARGUMENT, "not a valid safetensors file"),
    ("link-config", _linked_out("adapter_config.json"), grpc.StatusCode.INVALID_ARGUMENT, "is a link"),
    ("link-weights", _linked_out(WEIGHTS), grpc.StatusCode.INVALID_ARGUMENT, "is a link"),
    ("bomb", _regex_bomb, grpc.StatusCode.INVALID_ARGUMENT, "target_modules"),
    (BASE_MODEL, lambda root: "good", grpc.StatusCode.INVALID_ARGUMENT, "name of a served base model"),
    ("", lambda root: root / "good", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("has space", lambda root: root / "good", grpc.StatusCode.INVALID_ARGUMENT, "no spaces or slashes"),
    ("has/slash", lambda root: root / "good", grpc.StatusCode.INVALID_ARGUMENT, "no spaces or slashes"),
    ("x" * 129, lambda root: root / "good", grpc.StatusCode.INVALID_ARGUMENT, "limit is 128"),
    ("y" * 1_000_000, lambda root: root / "good", grpc.StatusCode.INVALID_ARGUMENT, "limit is 128"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "source", "code", "words"), CASES, ids=[c[0][:12] or "empty" for c in CASES]
)
async def test_bad_create(registry, workers, make_adapter, adapter_root, name, source, code, words):
    await workers("w0")
    good = make_adapter("good")
    await registry.CreateAdapter(create_request("dup", good), metadata=ADMIN)
    before = await registry.ListAdapters(reg.ListAdaptersRequest())
    path = source(adapter_root)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request(name, path), metadata=ADMIN)
    assert info.value.code() == code and words in info.value.details()
    assert len(info.value.details()) < 1000
    if not str(path).startswith("/"):  # a relative source: the absolute roots are never echoed
        assert str(adapter_root.parent) not in info.value.details()
    assert await registry.ListAdapters(reg.ListAdaptersRequest()) == before  # store unchanged, still serving


async def test_adapter_named_like_a_connected_workers_base_model_is_refused(registry, workers, make_adapter):
    await workers("w0", base_model="served-model")
    request = create_request("served-model", make_adapter("good"), base="")  # no base model given
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(request, metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name of a served base model" in info.value.details()


async def test_ten_megabyte_name_is_refused_by_size(registry, make_adapter):
    """The server accepts 4 MiB requests, so a 10 MB name never reaches the handler."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request("z" * 10_000_000, make_adapter("good")), metadata=ADMIN)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await registry.ListAdapters(reg.ListAdaptersRequest())).total_size == 0


async def test_get_and_delete_unknown(registry):
    for call, request, metadata in (
        (registry.GetAdapter, reg.GetAdapterRequest(name="ghost"), None),
        (registry.DeleteAdapter, reg.DeleteAdapterRequest(name="ghost"), ADMIN),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in info.value.details()


async def test_hub_ids_refused_without_flag(registry):
    adapter = reg.Adapter(name="hub", source=reg.AdapterSource(hub_id="org/some-lora"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(reg.CreateAdapterRequest(adapter=adapter), metadata=ADMIN)
    assert (
        info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "--allow-hub-sources" in info.value.details()
    )


@pytest.mark.parametrize(
    "metadata", [None, (("authorization", "Bearer wrong"),), (("authorization", "Basic abc"),)], ids=str
)
async def test_mutations_need_the_admin_token(registry, make_adapter, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.CreateAdapter(create_request("a", make_adapter("a")), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "admin token" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.DeleteAdapter(reg.DeleteAdapterRequest(name="a"), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await registry.ListAdapters(reg.ListAdaptersRequest())).total_size == 0  # reads stay open


async def test_unexpected_failure_is_internal_without_its_text(server, registry, monkeypatch, caplog):
    def broken(name: str):
        raise KeyError("secret internals")

    monkeypatch.setattr(server.service, "get", broken)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry.GetAdapter(reg.GetAdapterRequest(name="a"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details() and "control plane's log" in info.value.details()
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
