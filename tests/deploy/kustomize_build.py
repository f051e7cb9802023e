"""A small `kustomize build` for the tests: the subset deploy/kubernetes uses, nothing more.

Semantics: `build(folder, env_files)` loads `kustomization.yaml`; concatenates its `resources` (files,
or folders built recursively); adds the objects of `configMapGenerator` (literals and files; files that
are not UTF-8 go to binaryData) and `secretGenerator` (`envs` files, read from `env_files` by name
first, then from disk: a missing one raises FileNotFoundError, as kustomize fails); applies `patches`
(JSON 6902 op lists, to every object matching the target's kind and name); then sets `namespace`,
`labels` (metadata only) and `images` (newName/newTag). Generated names get no hash suffix: the
references stay as written, which is what kustomize rewrites them to.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace"}


def _load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _config_map(folder: Path, spec: dict) -> dict:
    data, binary = {}, {}
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for name in spec.get("files", []):
        raw = (folder / name).read_bytes()
        try:
            data[Path(name).name] = raw.decode()
        except UnicodeDecodeError:
            binary[Path(name).name] = base64.b64encode(raw).decode()
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": spec["name"]}, "data": data}
    return obj | ({"binaryData": binary} if binary else {})


def _secret(folder: Path, spec: dict, env_files: dict[str, str]) -> dict:
    data = {}
    for name in spec.get("envs", []):
        text = env_files[name] if name in env_files else (folder / name).read_text()
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = base64.b64encode(value.strip().encode()).decode()
    metadata = {"name": spec["name"]}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": data}


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json_patch(obj: dict, ops: list[dict]) -> None:
    """RFC 6902 add/replace/remove (the ops the overlays use), in place."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list) and op["op"] == "add":
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif op["op"] in ("add", "replace"):
            node[int(last) if isinstance(node, list) else last] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch op {op['op']!r}")


def _set_image(obj: dict, images: list[dict]) -> None:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []):
        name, _, _ = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def build(folder: Path, env_files: dict[str, str] | None = None) -> list[dict]:
    """The objects `kustomize build folder` would print (see the module docstring for the subset)."""
    env_files = env_files or {}
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for resource in spec.get("resources", []):
        path = folder / resource
        objects += build(path, env_files) if path.is_dir() else copy.deepcopy(_load_all(path))
    objects += [_config_map(folder, s) for s in spec.get("configMapGenerator", [])]
    objects += [_secret(folder, s, env_files) for s in spec.get("secretGenerator", [])]
    for patch in spec.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        target = patch["target"]
        key = (target["kind"], target["name"])
        matched = [o for o in objects if (o["kind"], o["metadata"]["name"]) == key]
        if not matched:
            raise ValueError(f"patch {patch['path']} matches no object ({target})")
        for obj in matched:
            apply_json_patch(obj, ops)
    for obj in objects:
        if spec.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = spec["namespace"]
        for label in spec.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
        _set_image(obj, spec.get("images", []))
    return objects
