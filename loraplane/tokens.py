"""The tokens `loraplane serve` and `loraplane up` run with: closed beyond loopback, zero setup on it.

Semantics: the worker token (`LORAPLANE_WORKER_TOKEN`) guards WorkerControl and the admin token
(`LORAPLANE_ADMIN_TOKEN`) guards the registry's writes and the runtime adapter routes, both checked by
the control plane. Each comes from the caller's environment when set. Otherwise:
- when something listens beyond loopback (the OpenAI API or the edge on a non-loopback `--host`, or the
  registry's writes published with `--expose-admin`), each missing token is read from its file in the
  data dir (`admin-token`, `worker-token`, mode 0600), or made and written there on the first start
  (the admin token is then printed once); later starts reuse it;
- on loopback, the worker token is random per run and there is no admin token (local processes only).
Either way the tokens reach the children through the environment, never the command line (`ps`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from loraplane.control_plane.config import DEFAULT_ADMIN_TOKEN_ENV, DEFAULT_WORKER_TOKEN_ENV, is_loopback

ADMIN_TOKEN_FILE = "admin-token"
WORKER_TOKEN_FILE = "worker-token"


@dataclass(frozen=True)
class TokenFile:
    """A token kept in `path` (mode 0600); `created` is True when this start made it."""

    path: Path
    created: bool


def load_or_create(path: Path) -> tuple[str, bool]:
    """The token in `path`, or a new random one written there with mode 0600; (token, created)."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        if path.stat().st_mode & 0o077:
            raise RuntimeError(f"{path} is readable by other users: chmod 600 {path}")
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token, True


def public(host: str) -> bool:
    """True when `host` (the --host of serve/up) is reachable from other machines."""
    return not is_loopback(host)


def ensure_tokens(data_dir: Path, host: str, expose_admin: bool = False) -> list[str]:
    """Put both tokens in this process's environment, for its children, per the module docstring.

    Returns the lines to show the user (where the admin token is; the token itself only when made now).
    """
    closed = public(host) or expose_admin
    lines = []
    for env, name in (
        (DEFAULT_WORKER_TOKEN_ENV, WORKER_TOKEN_FILE),
        (DEFAULT_ADMIN_TOKEN_ENV, ADMIN_TOKEN_FILE),
    ):
        if os.environ.get(env):
            continue
        if not closed:
            if env == DEFAULT_WORKER_TOKEN_ENV:
                os.environ[env] = secrets.token_urlsafe(32)
            continue
        path = Path(data_dir).expanduser() / name
        token, created = load_or_create(path)
        os.environ[env] = token
        if env == DEFAULT_ADMIN_TOKEN_ENV:
            lines.append(_admin_line(path, token, created))
    return lines


def _admin_line(path: Path, token: str, created: bool) -> str:
    use = f"send 'Authorization: Bearer <token>' for adapter changes; admin CLI: --admin-token-file {path}"
    if created:
        return f"admin token (shown once, kept in {path}): {token} ({use})"
    return f"admin token in {path} ({use})"
