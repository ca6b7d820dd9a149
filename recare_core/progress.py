"""The one progress-callback type and the one interruption exception of the whole core.

Every long computation of the pack (CARE-set construction, vocabulary embedding, erasure methods, LoRA
compression, toy-world training) takes ``progress(step, total, message)`` and ``should_stop()`` callbacks of the
types below and, when ``should_stop`` answers true, raises :class:`Interrupted` (with a message saying what
stopped and that nothing was changed). The ComfyUI nodes catch :class:`Interrupted` in one place and hand the
stop back to ComfyUI's executor.
"""

from __future__ import annotations

import time
from typing import Callable

ProgressCallback = Callable[[int, int, str], None]
"""``progress(step, total, message)``: ``step`` of ``total`` units done; ``message`` says what is running."""

StopCallback = Callable[[], bool]
"""``should_stop()``: true once the user asked the computation to stop."""


class Interrupted(RuntimeError):
    """The user asked a long computation to stop; what it was computing is discarded, inputs are unchanged."""


def check_stop(should_stop: StopCallback | None, message: str) -> None:
    """Raise :class:`Interrupted` with ``message`` when ``should_stop`` says so (no callback: never)."""
    if should_stop is not None and should_stop():
        raise Interrupted(message)


def console_progress(every: int) -> ProgressCallback:
    """A progress callback for command-line tools: prints ``[seconds since created] message`` (flushed, so that it
    shows in a log file at once) on every ``every``-th step and on the last."""
    start = time.perf_counter()

    def report(step: int, total: int, message: str) -> None:
        if step % every == 0 or step == total:
            print(f"[{time.perf_counter() - start:7.0f}s] {message}", flush=True)

    return report
