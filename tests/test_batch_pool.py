"""The thread-free process pool behind `cdss evaluate --jsonl --workers N` (cdss/cli/pool.py,
issue 15): results in order, a task that fails or whose worker dies fails with `Lost` (and the
pool goes on with a new worker), a stuck worker is killed, and no worker outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cdss.cli.pool import Lost, Pool, Stopped

ROOT = Path(__file__).resolve().parent.parent


def _echo(message: object) -> object:
    if message == "raise":
        raise ValueError("a task that fails as a whole")
    if message == "sleep":
        time.sleep(60)
    if isinstance(message, bytes):
        return message[::-1]
    return message


def test_results_come_back_for_every_task_in_any_order_of_waiting() -> None:
    pool = Pool(2, lambda: None, _echo)
    try:
        big = os.urandom(3 * 1024 * 1024)  # larger than a pipe: sent and received in pieces
        tasks = [pool.submit(i) for i in range(10)] + [pool.submit(big)]
        assert pool.wait(tasks[-1]) == big[::-1]
        assert [pool.wait(task) for task in tasks[:-1]] == list(range(10))
        assert len(pool.pids()) == 2 and os.getpid() not in pool.pids()
    finally:
        pool.kill()
    assert pool.pids() == []


def test_a_task_that_raises_is_lost_and_the_worker_goes_on() -> None:
    pool = Pool(1, lambda: None, _echo)
    try:
        failed, after = pool.submit("raise"), pool.submit("next")
        with pytest.raises(Lost):
            pool.wait(failed)
        assert pool.wait(after) == "next"
    finally:
        pool.kill()


def test_a_killed_worker_loses_the_tasks_it_held_and_is_replaced() -> None:
    pool = Pool(2, lambda: None, _echo)
    try:
        assert pool.wait(pool.submit("warm")) == "warm"
        stuck = pool.submit("sleep")
        victim = next(worker for worker in pool.workers if worker.tasks)
        pid = victim.pid
        queued = [pool.submit(i) for i in range(4)]  # 1 waits behind the sleeping task, 3 in the pool's queue
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Lost):
            pool.wait(stuck)
        outcomes = []
        for task in queued:
            try:
                outcomes.append(pool.wait(task))
            except Lost:
                outcomes.append("lost")
        assert outcomes == [0, "lost", 2, 3]  # not yet sent to a worker: not lost
        assert pool.wait(pool.submit("again")) == "again"  # a new worker took the dead one's place
        assert len(pool.pids()) == 2 and pid not in pool.pids()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped: no zombie
    finally:
        pool.kill()


def test_a_stuck_worker_is_killed_after_the_timeout() -> None:
    pool = Pool(1, lambda: None, _echo, timeout=0.5)
    try:
        task = pool.submit("sleep")
        start = time.monotonic()
        with pytest.raises(Lost):
            pool.wait(task)
        assert time.monotonic() - start < 30
        assert pool.wait(pool.submit(1)) == 1
    finally:
        pool.kill()


def test_waiting_ends_when_told_to_stop() -> None:
    pool = Pool(1, lambda: None, _echo)
    try:
        task = pool.submit("sleep")
        deadline = time.monotonic() + 0.3
        with pytest.raises(Stopped):
            pool.wait(task, lambda: time.monotonic() > deadline)
    finally:
        pool.kill()


@pytest.mark.parametrize("death_signal", [True, False], ids=["pdeathsig", "pipe-eof-only"])
def test_workers_do_not_outlive_a_parent_killed_with_sigkill(death_signal: bool) -> None:
    """Killed parent, no orphans: with PR_SET_PDEATHSIG, and also without it (each worker then ends
    at end-of-file on its task pipe, which needs every other worker to have closed its copy)."""
    script = textwrap.dedent(f"""
        import sys, time
        from cdss.cli import pool as module
        if not {death_signal}:
            module._die_with = lambda parent: None
        pool = module.Pool(3, lambda: None, lambda message: message)
        for i in range(3):
            pool.submit(i)
        tasks = [pool.submit(i) for i in range(3)]
        for task in tasks:
            pool.wait(task)
        print(" ".join(map(str, pool.pids())), flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 3
        assert all(_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (new) parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
