"""`loraplane worker` whose engine step always raises: a forced engine-loop failure for lifecycle tests.

python crashing_worker.py worker --listen ... (the same arguments as `python -m loraplane`)
"""

from __future__ import annotations

import sys

from loraplane.inference_worker.llm_engine import LLMEngine


def _broken_step(self: LLMEngine) -> list:
    raise RuntimeError("forced step failure")


LLMEngine._run_step = _broken_step  # both `step` (offline) and `step_updates` (the worker) run through it

from loraplane.cli import main  # noqa: E402 - after the patch, as a worker would import it

raise SystemExit(main(sys.argv[1:]))
