"""A process pool without threads, for `cdss evaluate --jsonl --workers N` (issue 15).

On a machine with as many cores as workers, every CPU-millisecond and every wake-up of the
parent is taken from a worker. `concurrent.futures.ProcessPoolExecutor` runs two threads in
the parent (a queue feeder and a result manager) and wakes several of them per task. Here the
parent is one thread and one `selectors` loop: N forked workers, one pipe pair each, a task is
one length-prefixed pickle written to the worker's pipe, its result one length-prefixed pickle
read back; the parent wakes when a result arrives and at no other time (or every POLL_SECONDS
while it waits, to act on a signal).

Nothing hangs and nothing is lost silently: a worker that dies (its result pipe reaches
end-of-file), or that takes longer than `timeout` on one task (it is killed), fails every task
it still held with `Lost`; the caller decides what to retry. A task whose handler raised also
fails with `Lost` (an empty result message). Workers die with the parent: they ask the kernel
for SIGKILL when the parent dies (Linux `PR_SET_PDEATHSIG`), and in any case end at
end-of-file on their task pipe, which only the parent holds open.
"""

from __future__ import annotations

import gc
import os
import pickle
import selectors
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("<Q")
"""Every message: its length, then a pickle (length 0 from a worker: the task failed as a whole)."""
PIPE_BYTES = 1024 * 1024
"""Capacity asked for every pipe (Linux's default is 64 KiB; /proc/sys/fs/pipe-max-size is 1 MiB by
default). Measured: a 64 KiB pipe made each worker block about 20 times per block of results."""
POLL_SECONDS = 0.1
"""How long the parent sleeps at most while it waits: the delay before a signal is acted on."""
READ_BYTES = 256 * 1024
DEPTH = 2
"""Tasks sent to one worker at a time: the one it works on and the next, already in its pipe."""

_PARENT_FDS: set[int] = set()
"""The parent's ends of the pipes of every live pool: a worker closes them all after the fork, so
that no worker keeps another worker's task pipe open (its end-of-file is how a worker learns that
the parent is gone)."""


class Lost(Exception):
    """The task's worker died, was stuck, or the task failed as a whole: no result came back."""


class Stopped(Exception):
    """The caller's stop condition became true while waiting."""


class Task:
    """One message sent to a worker; `result` once `done` (unless `lost`)."""

    __slots__ = ("done", "lost", "result")

    def __init__(self) -> None:
        self.done = False
        self.lost = False
        self.result: Any = None


class _Worker:
    __slots__ = ("inbox", "outbox", "pid", "receive", "send", "since", "tasks")

    def __init__(self, pid: int, send: int, receive: int) -> None:
        self.pid = pid
        self.send = send  # the parent's end of the task pipe (non-blocking)
        self.receive = receive  # the parent's end of the result pipe (non-blocking)
        self.tasks: deque[Task] = deque()  # sent, not yet answered, in order
        self.outbox = bytearray()  # what the task pipe could not take yet
        self.inbox = bytearray()  # received bytes not yet a whole message
        self.since = 0.0  # when the worker started on its oldest task


class Pool:
    """`workers` forked processes, each running `setup()` once and then `handle(message)` for every
    message sent to it, in order. Used from one thread; `kill()` ends every worker at once."""

    def __init__(self, workers: int, setup: Callable[[], None], handle: Callable[[Any], Any],
                 timeout: float = 300.0) -> None:
        self.size = workers
        self.setup = setup
        self.handle = handle
        self.timeout = timeout
        self.workers: list[_Worker] = []
        self.queue: deque[tuple[Task, bytes]] = deque()  # submitted, not yet sent to a worker
        self.selector = selectors.DefaultSelector()
        self.closed = False

    # ---------------------------------------------------------------- parent side

    def submit(self, message: Any) -> Task:
        """Queue `message` for the next worker with room for it (see `_dispatch`)."""
        task = Task()
        self.queue.append((task, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)))
        self._dispatch()
        return task

    def wait(self, task: Task, stop: Callable[[], bool] = lambda: False) -> Any:
        """The task's result, serving every worker meanwhile; `Lost` if it never comes, `Stopped`
        as soon as `stop()` is true (checked at least every POLL_SECONDS)."""
        while not task.done:
            if stop():
                raise Stopped
            self._dispatch()
            for key, events in self.selector.select(POLL_SECONDS):
                worker = key.data
                if worker.pid is None:  # lost earlier in this round
                    continue
                if events & selectors.EVENT_WRITE:
                    self._flush(worker)
                if events & selectors.EVENT_READ:
                    self._receive(worker)
            now = time.monotonic()
            for worker in list(self.workers):
                if worker.tasks and now - worker.since > self.timeout:
                    self._lose(worker)  # stuck: killed, its tasks fail
        if task.lost:
            raise Lost
        return task.result

    def _dispatch(self) -> None:
        """Send queued messages, oldest first, to workers holding fewer than DEPTH tasks (starting
        workers up to the pool's size): a worker always has its next task in its pipe, and a
        worker that is slowed down (by another process on its core) does not hold work the
        others could do."""
        while self.queue:
            if len(self.workers) < self.size:
                self.workers.append(self._start())
            worker = min(self.workers, key=lambda w: len(w.tasks))
            if len(worker.tasks) >= DEPTH:
                return
            task, payload = self.queue.popleft()
            if not worker.tasks:
                worker.since = time.monotonic()
            worker.tasks.append(task)
            self._send(worker, HEADER.pack(len(payload)) + payload)

    def _send(self, worker: _Worker, data: bytes) -> None:
        if worker.outbox:
            worker.outbox += data
            return
        try:
            written = os.write(worker.send, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker is gone: its result pipe will say so
            written = len(data)
        if written < len(data):
            worker.outbox += memoryview(data)[written:]
            self.selector.register(worker.send, selectors.EVENT_WRITE, worker)  # until `_flush` empties it

    def pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if worker.pid is not None]

    def kill(self) -> None:
        """Every worker killed (SIGKILL) and reaped now: after a signal or at the end, nothing is
        waited for. Their tasks are lost."""
        self.closed = True
        for task, _ in self.queue:
            task.lost = task.done = True
        self.queue.clear()
        for worker in self.workers:  # all at once, then reap each
            try:
                os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass
        for worker in list(self.workers):
            self._lose(worker)
        self.selector.close()

    def _start(self) -> _Worker:
        if self.closed:
            raise Lost  # a pool that was killed starts no worker
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        for fd in (task_write, result_write):
            _widen(fd)
        parent = os.getpid()
        frozen = gc.get_freeze_count()  # a host that froze objects itself keeps them frozen
        gc.freeze()  # the parent's objects are never the worker's garbage: its collections do not touch (copy) them
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's code
            code = 1
            try:
                os.close(task_write)
                os.close(result_read)
                for fd in _PARENT_FDS:
                    os.close(fd)
                _PARENT_FDS.clear()
                _die_with(parent)
                null = os.open(os.devnull, os.O_RDWR)  # the parent's stdin and stdout are not ours
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.close(null)
                self._serve(task_read, result_write)
                code = 0
            finally:
                os._exit(code)
        if not frozen:
            gc.unfreeze()
        os.close(task_read)
        os.close(result_write)
        os.set_blocking(task_write, False)
        os.set_blocking(result_read, False)
        _PARENT_FDS.update((task_write, result_read))
        worker = _Worker(pid, task_write, result_read)
        self.selector.register(result_read, selectors.EVENT_READ, worker)
        return worker

    def _flush(self, worker: _Worker) -> None:
        while worker.outbox:
            try:
                written = os.write(worker.send, worker.outbox)
            except BlockingIOError:
                return
            except OSError:  # the worker is gone: its result pipe will say so
                written = len(worker.outbox)
            del worker.outbox[:written]
        self.selector.unregister(worker.send)

    def _receive(self, worker: _Worker) -> None:
        ended = False
        while True:
            try:
                data = os.read(worker.receive, READ_BYTES)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                ended = True
                break
            worker.inbox += data
            if len(data) < READ_BYTES:
                break
        inbox = worker.inbox
        start = 0
        while len(inbox) - start >= HEADER.size:
            (length,) = HEADER.unpack_from(inbox, start)
            end = start + HEADER.size + length
            if len(inbox) < end:
                break
            task = worker.tasks.popleft()
            if length:
                task.result = pickle.loads(memoryview(inbox)[start + HEADER.size:end])
            else:
                task.lost = True
            task.done = True
            worker.since = time.monotonic()
            start = end
        if start:
            del inbox[:start]
        if ended:
            self._lose(worker)

    def _lose(self, worker: _Worker) -> None:
        """A worker that died, is stuck, or is no longer wanted: killed, reaped, its tasks lost."""
        if worker.pid is None:
            return
        for fd in (worker.send, worker.receive):
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        for fd in (worker.send, worker.receive):
            _PARENT_FDS.discard(fd)
            os.close(fd)
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(worker.pid, 0)
        except ChildProcessError:
            pass
        worker.pid = None
        for task in worker.tasks:
            task.lost = task.done = True
        worker.tasks.clear()
        self.workers.remove(worker)

    # ---------------------------------------------------------------- worker side

    def _serve(self, task_fd: int, result_fd: int) -> None:
        """The worker's loop: until end-of-file on the task pipe (the pool is closed or the parent
        is gone), read a message, handle it, send the pickled result (empty if it raised)."""
        self.setup()
        with open(task_fd, "rb", buffering=READ_BYTES) as tasks:
            while True:
                head = tasks.read(HEADER.size)
                if len(head) < HEADER.size:
                    return
                (length,) = HEADER.unpack(head)
                body = tasks.read(length)
                if len(body) < length:
                    return
                try:
                    reply = pickle.dumps(self.handle(pickle.loads(body)), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # noqa: BLE001 - the parent retries the task's lines one by one
                    reply = b""
                _write_all(result_fd, HEADER.pack(len(reply)) + reply)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _die_with(parent: int) -> None:
    """Ask the kernel to SIGKILL this worker when the parent dies (Linux only; elsewhere the worker
    ends at end-of-file on its task pipe, after its current task)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _widen(fd: int) -> None:
    """Ask for a PIPE_BYTES pipe (Linux only; anything that does not work leaves the pipe as it is:
    only speed depends on it)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]
    except (AttributeError, ImportError, OSError, ValueError):
        pass
