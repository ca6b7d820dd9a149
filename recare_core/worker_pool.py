"""Worker processes for the long command-line runs (frontier, toy-world tables): one ``spawn`` pool that stops
whole. Ctrl-C already ends a pool's workers with it; a plain ``kill PID`` (SIGTERM) used to end only the parent
and leave each worker finishing its job alone. Inside :func:`spawn_pool` SIGTERM raises ``SystemExit`` in the
parent, so the pool's own exit terminates the workers before the parent goes."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import signal
import threading
from typing import Iterator


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def spawn_pool(processes: int) -> Iterator[multiprocessing.pool.Pool]:
    """A ``spawn`` pool of ``processes`` workers (at least one) that SIGTERM to this process stops too."""
    handle_signal = threading.current_thread() is threading.main_thread()  # signals only reach the main thread
    previous = signal.signal(signal.SIGTERM, _exit_on_terminate) if handle_signal else None
    try:
        with multiprocessing.get_context("spawn").Pool(max(1, processes)) as pool:
            yield pool
    finally:
        if handle_signal:  # None: the previous handler was not set from Python; the default is the nearest
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
