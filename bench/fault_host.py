"""Host faults of bench/faults.py: the data dir on a full disk (a small tmpfs) and an SSH server that
accepts connections and never speaks, under a burst of reads."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fault_rows import Check, errors_seen, note, pct, spread, wait
from faultstack import HOST, Ports, Stack, health, running_stack

LOG_MAX_BYTES = 1048576  # TUNNELSITE_LOG_MAX_BYTES's default
LOG_KEEP = 2


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``path`` (root only); yields False when it cannot be mounted here."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0 and subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # something still holds a file


def fill(path: Path) -> int:
    """Write ``path`` until the disk is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    written += handle.write(chunk[:size])
            except OSError:
                continue
    return written


def hammer(port: int, stop: threading.Event) -> None:
    """Connections to a -L tunnel whose far end refuses: each costs ssh a log line."""
    while not stop.is_set():
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.recv(16)
        except OSError:
            time.sleep(0.01)


class LogWatch:
    """Sizes of one tunnel's log: the live file and, with its rotated copies, the total; the largest seen
    and how fast the live file grew (rotation empties it: only increases count)."""

    def __init__(self, stack: Stack, tunnel_id: str) -> None:
        self.base = stack.data / "logs" / f"tunnel-{tunnel_id}.log"
        self.live_max = self.total_max = self.grown = 0
        self.rate = 0.0  # bytes per second the live file grew before the disk filled
        self.last = self.sizes()[0]

    def sizes(self) -> tuple[int, int]:
        sizes = {path.name: path.stat().st_size for path in self.base.parent.glob(self.base.name + "*")}
        return sizes.get(self.base.name, 0), sum(sizes.values())

    def sample(self) -> None:
        live, total = self.sizes()
        self.grown += max(0, live - self.last)
        self.last = live
        self.live_max, self.total_max = max(self.live_max, live), max(self.total_max, total)


def disk_full_row(root: Path, ports: Ports, template: Path, quick: bool) -> list[Check]:
    mount = root / "disk"
    with tmpfs(mount, "48m") as mounted:
        if not mounted:
            return [
                Check(
                    "a tmpfs cannot be mounted here (not root, or no CAP_SYS_ADMIN): row not run",
                    "a small tmpfs for the data dir",
                    None,
                )
            ]
        with running_stack(root, ports, template, data=mount / "data") as stack:
            return full_disk_under(stack, 8.0 if quick else 20.0)
    return []


def full_disk_under(stack: Stack, seconds: float) -> list[Check]:
    probe = stack.probe
    noisy = stack.create("-L", probe=False, remote_port=stack.ports.take())  # nothing listens there
    wait(lambda: stack.tunnels()[noisy.id]["status"] == "running", timeout=30)
    stop = threading.Event()
    for _ in range(4):
        threading.Thread(target=hammer, args=(noisy.entry, stop), daemon=True).start()
    log = LogWatch(stack, noisy.id)
    try:
        began = time.monotonic()
        while time.monotonic() < began + min(12.0, seconds):  # past LOG_MAX_BYTES at the rate
            time.sleep(0.5)
            log.sample()
        log.rate = log.grown / (time.monotonic() - began)
        note(f"noisy tunnel's log grew {log.rate / 1024:.0f} KB/s before the disk was full")
        filler = stack.data / "filler"
        note(f"filler: {fill(filler) >> 20} MB")
        during = under_full_disk(stack, seconds, log)
        filler.unlink()
    finally:
        stop.set()
    crash = during["crash"]
    back = probe.wait_all_ok(during["killed_at"], timeout=60, ids=[crash])
    time.sleep(32)  # one resync (TUNNELSITE_WORKER_RESYNC, 30 s) to close or repair sessions
    return full_disk_checks(stack, during, back)


def compat_status(stack: Stack, tunnel_hash: str) -> str:
    """What the autossh-compatible ``GET /status`` says of one tunnel (``RUNNING``), or the answer's kind."""
    answer = stack.call("GET", "/status")
    if not isinstance(answer.body, list):
        return answer.kind
    return next((str(item.get("status")) for item in answer.body if item.get("hash") == tunnel_hash), "missing")


def under_full_disk(stack: Stack, seconds: float, log: LogWatch) -> dict:
    """While the disk is full: a create every 2 s, the health check and compat /status, and a
    SIGKILL of one -R tunnel's autossh after 2 s."""
    until = time.monotonic() + seconds
    crash = next(t for t in stack.probe.tunnels.values() if t.direction == "-R")
    writes, said, compat = Counter(), Counter(), Counter()
    killed_at = None
    while time.monotonic() < until:
        if killed_at is None and time.monotonic() > until - seconds + 2:
            stack.crash(crash.id)
            killed_at = time.monotonic()
        writes[stack.call("POST", "/api/v1/tunnels/", stack.tunnel_body("-L", desired_state="stopped")).kind] += 1
        said[health(stack.web)] += 1
        compat[compat_status(stack, crash.hash)] += 1
        log.sample()
        time.sleep(max(0.0, 2 - (time.monotonic() - until + seconds) % 2))
    return {
        "writes": writes,
        "health": said,
        "compat": compat,
        "log": log,
        "crash": crash.id,
        "killed_at": killed_at or time.monotonic(),
    }


def full_disk_checks(stack: Stack, during: dict, back: float | None) -> list[Check]:
    crash, log = during["crash"], during["log"]
    respawns = stack.probe.pids_after(crash, during["killed_at"])
    reported = any("disk" in key.lower() for key in during["health"])
    note(f"health during: {dict(during['health'])}")
    note(f"last_error of the crashed tunnel: {errors_seen(stack, crash, during['killed_at'], time.monotonic())}")
    down = back - during["killed_at"] if back else None
    # What one check lets in: the output of one check interval (1 s) and a late pass (0.5 s) at the rate
    # measured (the machine decides how fast the noisy tunnel writes: 380 KB/s in the issue, 600 here).
    overshoot = max(0.5 * LOG_MAX_BYTES, 1.5 * log.rate)
    live_bound = LOG_MAX_BYTES + overshoot
    total_bound = (LOG_KEEP + 1) * live_bound  # each copy is a live file as it was rotated
    return [
        Check(
            f"noisy tunnel's log: live file largest {log.live_max / 2**20:.2f} MB, with its copies "
            f"{log.total_max / 2**20:.2f} MB",
            f"bounded between resyncs: live <= {live_bound / 2**20:.2f} MB (LOG_MAX_BYTES 1 MB + 1.5 s of output "
            f"at the rate measured), with its {LOG_KEEP} copies <= {total_bound / 2**20:.2f} MB (issue: past 1 MB "
            "at 380 KB/s, disk full in 7 s)",
            log.live_max <= live_bound and log.total_max <= total_bound,
        ),
        Check(
            f"creates during the full disk: {dict(during['writes'])}",
            "JSON errors, never HTML 500",
            all("json" in kind for kind in during["writes"]),
        ),
        Check(
            f"disk full reported in GET /api/v1/status: {'yes' if reported else 'no'}",
            "yes, as the node error 'disk full: data dir'",
            reported,
        ),
        Check(
            f"a tunnel crashed during it: down {f'{down:.1f} s' if down else 'until the end'}, {len(respawns)} new "
            f"autossh pid(s), compat /status said {dict(during['compat'])}",
            "back within a few s (issue: respawned and killed 3 times, down 36 s, while /status said RUNNING); "
            "pass: down < 5 s",
            bool(down and down < 5),
        ),
        open_sessions_check(stack),
    ]


def open_sessions_check(stack: Stack) -> Check:
    tunnels = stack.tunnels()
    open_sessions = Counter(s["tunnel_id"] for s in stack.history() if not s["unregistered_at"])
    running = [tid for tid, t in tunnels.items() if t["status"] == "running"]
    wrong = {tunnels[tid]["name"]: open_sessions.get(tid, 0) for tid in running if open_sessions.get(tid, 0) != 1}
    wrong.update({tunnels[t]["name"]: n for t, n in open_sessions.items() if t in tunnels and t not in running})
    return Check(
        f"tunnels with other than one open session (running) or any (not running) afterwards: {wrong or 'none'}",
        "none: exactly one open session per running tunnel (issue: 2 open sessions forever)",
        not wrong,
    )


class Hanging:
    """A TCP server that accepts and never says a word (an SSH server that hangs)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(256)
        self.port = port
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def burst(stack: Stack, count: int) -> list[float]:
    """``count`` concurrent reads (one thread each); their latencies (s)."""
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(stack.call("GET", "/api/v1/tunnels/?limit=50", timeout=120)))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    note(f"{count} reads answered: {dict(Counter(a.kind for a in answers))}")
    return [a.seconds for a in answers]


def hanging_row(root: Path, ports: Ports, template: Path, quick: bool) -> list[Check]:
    posts_n, reads_n = (6, 50) if quick else (20, 200)
    with running_stack(root, ports, template) as stack:
        floor = burst(stack, reads_n)  # the same burst with nothing waiting: the floor of this machine
        hang = Hanging(ports.take())
        try:
            ids = [
                stack.create("-L", probe=False, ssh_port=hang.port, desired_state="stopped").id for _ in range(posts_n)
            ]
            posts: list = []
            post_threads = [
                threading.Thread(target=lambda t=t: posts.append(stack.action(t, "start", 30, 120))) for t in ids
            ]
            for thread in post_threads:
                thread.start()
            time.sleep(0.5)
            reads = burst(stack, reads_n)
            for thread in post_threads:
                thread.join(timeout=150)
        finally:
            hang.close()
    post_s = [a.seconds for a in posts]
    outputs = Counter(str(a.get("output"))[:50] for a in posts).most_common(3)
    note(f"start?wait=30 answers: {dict(Counter(a.kind for a in posts))}, outputs {outputs}")
    return [
        Check(
            f"{reads_n} concurrent reads while {posts_n} starts wait: p50 {pct(reads, 0.5):.2f} s, "
            f"p90 {pct(reads, 0.9):.2f} s, p99 {pct(reads, 0.99):.2f} s (floor, nothing waiting: p90 "
            f"{pct(floor, 0.9):.2f} s, p99 {pct(floor, 0.99):.2f} s)",
            "not held behind the waits (issue: p90 31 s, p99 31.5 s); pass: p99 < floor p99 + 2 s",
            pct(reads, 0.99) < pct(floor, 0.99) + 2,
        ),
        Check(
            f"{posts_n} start?wait=30: {spread(post_s)}, min {min(post_s):.1f} s",
            "each within its 30 s cap plus a small margin (issue: 31-47 s); pass: max <= 32 s",
            max(post_s) <= 32,
        ),
    ]
