"""One control plane per data dir: an exclusive lock on `<data dir>/control-plane.lock`.

Semantics: `DataDirLock.acquire(data_dir)` creates the folder, opens the lock file and takes an
exclusive, non-blocking `fcntl.flock` on it; it then writes this process's pid (and, once known through
`set_address`, the address it serves on) into the file. The kernel drops the lock when the process
exits, however it exits (kill -9 included), so a stale file never blocks a restart. A second control
plane on the same folder gets `DataDirInUseError` at once, naming the running one's pid and address.
Two control planes on one SQLite file would each mark the other's workers down, hand out the same
worker ids and route to each other's workers, which is why this is refused rather than shared.
`holder(data_dir)` reads who holds the lock without taking it (None when nobody does).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "control-plane.lock"


class DataDirInUseError(RuntimeError):
    """Another live control plane holds the data dir."""


@dataclass(frozen=True)
class LockHolder:
    """What the holder wrote into the lock file."""

    pid: int
    address: str

    def describe(self, data_dir: Path) -> str:
        where = f" on {self.address}" if self.address else " (still starting)"
        return (
            f"data dir {data_dir} is in use by the control plane with pid {self.pid}{where}; stop it, "
            "or pass --data-dir to use another folder"
        )


def _read_holder(path: Path) -> LockHolder:
    try:
        body = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        body = {}
    return LockHolder(int(body.get("pid", 0) or 0), str(body.get("address", "")))


class DataDirLock:
    """An acquired data-dir lock; `release()` (or the process's exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._address = ""

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock `data_dir` for this process; DataDirInUseError when another process holds it."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUseError(_read_holder(path).describe(data_dir)) from None
        lock = cls(path, fd)
        lock._write()
        return lock

    def set_address(self, address: str) -> None:
        """Record where this control plane serves, for the message a second one prints."""
        self._address = address
        self._write()

    def _write(self) -> None:
        body = json.dumps({"pid": os.getpid(), "address": self._address}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, body, 0)

    def release(self) -> None:
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


def holder(data_dir: Path) -> LockHolder | None:
    """The control plane holding `data_dir`, or None when the folder is free (nothing is created)."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path)
    finally:
        os.close(fd)
    return None
