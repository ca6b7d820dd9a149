"""The benchmarks' worker pool stops whole: ``kill PID`` on a run's parent ends its workers too, instead of
leaving each one to finish its job alone (as a frontier run's workers used to)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RUN = textwrap.dedent("""
    import time
    from recare_core.worker_pool import spawn_pool
    with spawn_pool(2) as pool:
        pending = [pool.apply_async(time.sleep, (120,)) for _ in range(2)]
        print("started", flush=True)
        for job in pending:
            job.get()
""")


def _pool_workers(pid: int) -> list[int]:
    """The spawn workers among ``pid``'s children (not its resource tracker); a process gone meanwhile is skipped."""
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and "spawn_main" in command:
                workers.append(int(entry.name))
    return workers


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_sigterm_to_the_parent_ends_its_workers():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", RUN], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _pool_workers(parent.pid)
            time.sleep(0.1)
        assert len(workers) == 2, "the pool's workers did not start"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "a worker outlived its stopped parent"
    finally:
        if parent.poll() is None:
            parent.kill()
