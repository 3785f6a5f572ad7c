"""Peak resident memory of a whole process tree, sampled from /proc (Linux).

A process's own ``ru_maxrss`` misses its children (and RUSAGE_CHILDREN reports only the largest
child ever waited for). This samples the tree instead: every ``interval_s`` it finds every live
descendant of the root (by parent pid, through /proc/*/stat), reads each one's RSS from
/proc/<pid>/statm and sums them. It reports the largest sum seen and the largest single process.
Pages shared between processes (a fork's copy-on-write pages, shared libraries) count once per
process, as `ps` shows them: an upper bound of what the tree holds. A spike shorter than the
interval can be missed; a descendant that re-parents itself away (double fork) is not followed.

Use from Python::

    with ProcTreeSampler(proc.pid) as sampler:
        proc.wait()
    peak = sampler.peak  # TreePeak

or run a command under it (prints one JSON line on stderr)::

    python scripts/proc_tree_rss.py [--interval 0.2] -- python -m potato_assets.lib.synthetic_landing ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # exited between listing and reading
            continue
        # the command name may hold spaces and parentheses: the fields start after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree_pids(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """The root and every live descendant (children, grandchildren, ...)."""
    parents = parent_pids() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root] if root in parents else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process, or None if it has exited."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return " ".join(part.decode(errors="replace") for part in fh.read().split(b"\0") if part)[:200]
    except OSError:
        return "?"


@dataclass
class TreePeak:
    total_mb: float = 0.0
    """Largest sum of the tree's RSS at one sample."""
    largest_process_mb: float = 0.0
    """Largest RSS of one process at any sample."""
    largest_process: str = ""
    """That process's command line."""
    processes_at_peak: int = 0
    max_processes: int = 0
    samples: int = 0
    peak_at_s: float = 0.0
    """Seconds after the sampler started."""


class ProcTreeSampler:
    """Samples the tree under ``root_pid`` every ``interval_s`` seconds on a background thread
    until :meth:`stop` (or the context's end); :attr:`peak` holds the result."""

    def __init__(self, root_pid: int, interval_s: float = 0.2) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peak = TreePeak()
        self._largest_pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def sample(self) -> int:
        """One sample now: the tree's summed RSS in bytes (0 once the root is gone)."""
        sizes = {pid: rss for pid in tree_pids(self.root_pid) if (rss := rss_bytes(pid)) is not None}
        total = sum(sizes.values())
        peak = self.peak
        peak.samples += 1
        peak.max_processes = max(peak.max_processes, len(sizes))
        if total / MB > peak.total_mb:
            peak.total_mb = round(total / MB, 1)
            peak.processes_at_peak = len(sizes)
            peak.peak_at_s = round(time.monotonic() - self._t0, 2)
        if sizes:
            pid, rss = max(sizes.items(), key=lambda item: item[1])
            if rss / MB > peak.largest_process_mb:
                peak.largest_process_mb = round(rss / MB, 1)
                if pid != self._largest_pid:
                    self._largest_pid = pid
                    peak.largest_process = command_name(pid)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> ProcTreeSampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="proc-tree-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TreePeak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak

    def __enter__(self) -> ProcTreeSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sampled(cmd: list[str], interval_s: float = 0.2, **popen_kwargs: object) -> tuple[int, float, float, TreePeak]:
    """Run ``cmd`` to its end under a sampler: (exit code, wall seconds, CPU seconds, peak).

    CPU is user + system time of the process and the descendants it waited for (wait4): on a
    shared machine it says more about the work than the wall time does."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen_kwargs)  # type: ignore[call-overload]
    with ProcTreeSampler(proc.pid, interval_s) as sampler:
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, sampler.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    code, wall_s, cpu_s, peak = run_sampled(cmd, args.interval)
    report = {"exit_code": code, "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), **asdict(peak)}
    print(json.dumps(report), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
