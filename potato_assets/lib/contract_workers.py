"""Worker processes that judge some of a suite's rules while the calling process judges the others
(lib/contracts.py, ``run_contract_dataset(..., processes=2)``). GX is pure Python and holds the
GIL: a second core helps only from a second process.

A worker is a fresh interpreter started with subprocess (fork and exec at once: safe in the
threaded run process). Not multiprocessing's spawn or forkserver: both re-run the parent's
``__main__`` module in the child (the ``dagster`` script, ``python -m potato_assets.lake_checks``
and its definitions), seconds and hundreds of MB for nothing. It imports GX once, then judges one
task at a time for as long as the process that started it lives:

- a task and its reply are pickles over two pipes (multiprocessing.connection);
- a third pipe is the worker's lifeline: nothing is ever written to it, and when the parent exits
  or is killed the worker reads end-of-file and exits at once, mid-task too (never an orphan);
- a worker that dies (killed, out of memory) closes its reply pipe: the parent reads end-of-file
  and raises WorkerDied with one plain sentence; the next task gets a new worker;
- at interpreter exit the parent closes the pipes and waits a moment for its workers.

No Dagster here.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The directory holding the potato_assets package: the worker imports it from there even where
# the parent found it on a sys.path of its own (a test run, `dagster -m` from the checkout).
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# Added to a worker's niceness: the CPU goes to the run's process first.
NICENESS = 10
# How long closing a worker waits for it to exit before it is killed.
CLOSE_SECONDS = 5.0


class WorkerDied(RuntimeError):
    """A worker process ended before it replied (killed, out of memory, failed to start)."""


class Worker:
    """One worker process, started at once (it imports GX while the parent gets on with work)."""

    def __init__(self) -> None:
        task_r, task_w = os.pipe()
        reply_r, reply_w = os.pipe()
        life_r, life_w = os.pipe()
        env = dict(os.environ)
        env["GX_ANALYTICS_ENABLED"] = "false"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
        code = f"from potato_assets.lib.contract_workers import serve; serve({task_r}, {reply_w}, {life_r})"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(task_r, reply_w, life_r), stdin=subprocess.DEVNULL, env=env
            )
        except BaseException:
            for fd in (task_w, reply_r, life_w):
                os.close(fd)
            raise
        finally:
            # Only the child keeps its ends: end-of-file then means the other side is gone.
            for fd in (task_r, reply_w, life_r):
                os.close(fd)
        self._tasks = Connection(task_w, readable=False)
        self._replies = Connection(reply_r, writable=False)
        self._life: int | None = life_w
        self.busy = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, function: Any, *args: Any, **kwargs: Any) -> None:
        """Start ``function(*args, **kwargs)`` in the worker (a module-level function: pickled by name)."""
        if self.busy:
            raise RuntimeError(f"worker {self.pid} is still busy with a task")
        try:
            self._tasks.send((function, args, kwargs))
        except OSError:
            raise WorkerDied(self._death()) from None
        self.busy = True

    def replied(self) -> bool:
        """Whether the reply (or the end of a dead worker's pipe) is there to read."""
        return self._replies.poll()

    def reply(self) -> tuple[str, Any]:
        """The task's reply, ("ok", value) or ("error", one line), once it comes; WorkerDied
        when the worker ended first."""
        try:
            reply: tuple[str, Any] = self._replies.recv()
        except (EOFError, OSError):
            raise WorkerDied(self._death()) from None
        self.busy = False
        return reply

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"the contract worker process (pid {self.pid}) {how} before it replied"

    def close(self, kill: bool = False) -> None:
        """End the worker: kill it (mid-task), or let it see its pipes close and exit."""
        if kill and self.alive():
            self.process.kill()
        for end in (self._tasks, self._replies):
            end.close()
        if self._life is not None:
            os.close(self._life)
            self._life = None
        try:
            self.process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_WORKERS: list[Worker] = []
_LOCK = threading.Lock()
_exit_hook = False


def workers(count: int) -> list[Worker]:
    """``count`` idle workers, started on first use and kept for the life of this process (one that
    died since is replaced). The caller keeps them to itself until they replied (contracts do:
    one split at a time)."""
    global _exit_hook
    with _LOCK:
        for worker in [w for w in _WORKERS if not w.alive() or w.busy]:
            _WORKERS.remove(worker)
            worker.close(kill=True)
        while len(_WORKERS) < count:
            _WORKERS.append(Worker())
        if not _exit_hook:
            atexit.register(close_all)
            _exit_hook = True
        return _WORKERS[:count]


def discard(worker: Worker) -> None:
    """Kill a worker whose task is no longer wanted (or that died); the next call starts another."""
    with _LOCK:
        if worker in _WORKERS:
            _WORKERS.remove(worker)
    worker.close(kill=True)


def close_all() -> None:
    with _LOCK:
        ending = list(_WORKERS)
        _WORKERS.clear()
    for worker in ending:
        worker.close(kill=worker.busy)


# ----------------------------------------------------------------------------------------------
# The worker's side
# ----------------------------------------------------------------------------------------------


def serve(task_fd: int, reply_fd: int, life_fd: int) -> None:
    """The worker's main loop: one task at a time until the task pipe closes."""
    # Ctrl-C reaches the whole process group: the parent decides, and this process ends with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The run's own process comes first: a worker starts (GX's seconds of import) while the run
    # ingests, which keeps both cores busy, and its judging otherwise overlaps a process that waits.
    os.nice(NICENESS)
    threading.Thread(target=_exit_with_parent, args=(life_fd,), name="lifeline", daemon=True).start()
    tasks = Connection(task_fd, writable=False)
    replies = Connection(reply_fd, readable=False)
    _without_gx_extras()
    from potato_assets.lib import contracts
    from potato_assets.lib.process import release_freed_memory

    contracts.warm_up()
    while True:
        try:
            function, args, kwargs = tasks.recv()
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", function(*args, **kwargs))
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        # Idle between tasks with only what GX itself holds (the run's other steps need the memory).
        release_freed_memory()
        try:
            replies.send(reply)
        except Exception as exc:  # an unpicklable value: say so rather than die
            replies.send(("error", f"the reply could not be sent back ({type(exc).__name__}: {exc})"))


# GX's optional integrations, which it imports when installed and skips when not (its
# compatibility modules catch the ImportError). A worker judges pandas batches only: without them
# it starts in about a second less and holds ~60 MB less.
# The outcomes are the same (the tests compare the workers' with the calling process').
GX_EXTRAS_NOT_IMPORTED = ("pyspark", "sqlalchemy", "google.cloud", "google.oauth2", "google.auth")


def _without_gx_extras() -> None:
    for name in GX_EXTRAS_NOT_IMPORTED:
        # None in sys.modules makes `import name` raise ImportError in this process only.
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def imported(names: list[str]) -> dict[str, bool]:
    """Which of these modules this process has imported (a task: what a worker holds)."""
    return {name: sys.modules.get(name) is not None for name in names}


def _exit_with_parent(life_fd: int) -> None:
    while os.read(life_fd, 1):
        pass
    os._exit(0)
