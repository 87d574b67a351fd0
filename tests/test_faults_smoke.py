"""bench/faults.py keeps running: its quickest row end to end, as a subprocess.

The script's figures are not asserted here (they are the benchmark's, printed next to the issue's
expectation); this only proves that a selected row starts the whole stack (gunicorn, worker, sshd,
tunnels), injects its fault and prints its checks, and that the script stops everything it started.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import sshd as sshd_mod
from tests.webproc import own_databases

ROOT = Path(__file__).resolve().parent.parent
BOUND = 60  # seconds: the row takes ~15 s on 2 cores

pytestmark = [pytest.mark.e2e, own_databases]


def run_bench(*args: str) -> str:
    """Run bench/faults.py; on overrunning BOUND, SIGTERM it (its rows clean up in finally), then fail."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "faults.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"bench/faults.py {' '.join(args)} overran {BOUND} s:\n{output}")
    assert proc.returncode == 0, output
    return output


def processes_under(root: Path) -> list[str]:
    """Processes whose command line or environment names ``root`` (sshd, gunicorn, worker, tunnels, agents)."""
    import psutil

    left = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "environ"]):
        text = " ".join(proc.info["cmdline"] or []) + " ".join((proc.info["environ"] or {}).values())
        if str(root) in text and proc.pid != os.getpid():
            left.append(f"{proc.pid} {proc.info['name']}")
    return left


def test_quickest_row_runs_and_prints_its_checks():
    reason = sshd_mod.available()
    if reason:
        pytest.skip(reason)
    output = run_bench("--rows", "autossh-kill", "--quick", "--keep")
    kept = Path(re.search(r"^logs kept in (\S+)$", output, re.M).group(1))
    try:
        assert not processes_under(kept), output
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert "[autossh-kill] kill -9 of an autossh" in output, output
    for direction in ("-L", "-R"):
        # One check per direction: PASS or FAIL, the figure, then the expectation.
        assert re.search(rf"^  (PASS|FAIL)  {direction} history says .+\n +should: killed by SIGKILL", output, re.M), (
            output
        )
    assert "ERROR" not in output, output
    assert re.search(r"^(every check passed|\d+ check\(s\) failed)$", output, re.M), output


def test_unknown_row_is_refused():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faults.py"), "--rows", "no-such-row"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown rows ['no-such-row']" in done.stderr
