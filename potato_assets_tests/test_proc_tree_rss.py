"""scripts/proc_tree_rss.py: the peak RSS of a whole process tree, seen on a known tree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from potato_assets_tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import proc_tree_rss  # noqa: E402
from proc_tree_rss import ProcTreeSampler  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")

# A parent (30 MB) with two children (50 MB each), one of which has a child (70 MB). Every
# process forks before it allocates, so no allocation is shared copy-on-write with another.
TREE = r"""
import os, sys, time
MB = 2**20
ready_r, ready_w = os.pipe()

def hold(mb):
    data = b"\x01" * (mb * MB)  # written, so resident
    os.write(ready_w, b"r")
    while True:
        time.sleep(60)

def child(mb, grandchild_mb=None):
    if os.fork() == 0:
        if grandchild_mb is not None and os.fork() == 0:
            hold(grandchild_mb)
        hold(mb)

child(50)
child(50, 70)
parent = b"\x01" * (30 * MB)
for _ in range(3):
    os.read(ready_r, 1)
print("ready", flush=True)
sys.stdin.read()
"""
ALLOCATED_MB = 30 + 50 + 50 + 70
INTERPRETER_MB = 40  # a bare interpreter's own resident pages, generously


@pytest.fixture
def tree():
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tree's own session: the test started it
        proc.wait()


def test_the_sum_over_every_descendant_is_seen(tree):
    assert len(proc_tree_rss.tree_pids(tree.pid)) == 4
    sampler = ProcTreeSampler(tree.pid)
    total_mb = sampler.sample() / proc_tree_rss.MB
    assert ALLOCATED_MB <= total_mb <= ALLOCATED_MB + 4 * INTERPRETER_MB
    peak = sampler.peak
    assert peak.max_processes == peak.processes_at_peak == 4 and peak.samples == 1
    assert 70 <= peak.largest_process_mb <= 70 + INTERPRETER_MB
    assert "-c" in peak.largest_process  # the command line of the 70 MB grandchild


def test_the_background_sampler_keeps_the_peak(tree):
    with ProcTreeSampler(tree.pid, interval_s=0.05) as sampler:
        time.sleep(0.4)
    assert sampler.peak.samples >= 2
    assert ALLOCATED_MB <= sampler.peak.total_mb <= ALLOCATED_MB + 4 * INTERPRETER_MB


def test_a_finished_tree_holds_nothing():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    sampler = ProcTreeSampler(proc.pid)
    assert sampler.sample() == 0 and sampler.peak.total_mb == 0 and sampler.peak.max_processes == 0


def test_cli_runs_the_command_and_reports_its_peak(capsys):
    code = proc_tree_rss.main(
        ["--interval", "0.05", "--", sys.executable, "-c", "import time; x = b'1' * (80 * 2**20); time.sleep(1)"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert report["exit_code"] == 0 and 80 <= report["total_mb"] <= 80 + INTERPRETER_MB
    assert 0 < report["cpu_s"] < report["wall_s"]  # it mostly sleeps
    assert proc_tree_rss.main(["--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
