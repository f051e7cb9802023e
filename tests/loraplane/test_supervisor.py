"""Supervisor: a critical child's exit stops all; a non-critical one may exit while another lives."""

from __future__ import annotations

import sys
import time

from loraplane.supervisor import Supervisor, free_port, http_ok

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
EXIT_SOON = [sys.executable, "-c", "import time; time.sleep(0.5)"]


def test_critical_exit_stops_everyone():
    sup = Supervisor(grace_s=5)
    other = sup.start("worker", SLEEP, critical=False)
    sup.start("gateway", EXIT_SOON)
    assert sup.supervise() == 1
    assert not other.alive


def test_last_non_critical_exit_stops_everyone_but_not_before():
    sup = Supervisor(grace_s=5)
    first = sup.start("worker-0", EXIT_SOON, critical=False)
    second = sup.start("worker-1", [sys.executable, "-c", "import time; time.sleep(2)"], critical=False)
    start = time.monotonic()
    assert sup.supervise() == 1
    assert time.monotonic() - start >= 1.5 and not first.alive and not second.alive


def test_http_ok_is_false_when_nothing_listens():
    assert not http_ok(f"http://127.0.0.1:{free_port()}/health", timeout_s=0.5)
