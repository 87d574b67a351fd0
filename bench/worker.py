"""The tunnel worker under load: start latency, recovery, idle cost, pass cost.

Starts its own sshd on loopback (tests/sshd.py), a temp data dir with a
migrated SQLite database, and ``manage.py tunnel_worker`` (default interval)
as a subprocess, then prints:

* start latency: create a tunnel → status running and its local port accepting TCP, p50/p90 over 20 tunnels
* recovery: kill -9 a tunnel's autossh → a new process running and accepting, over 5 tunnels
* 100 live tunnels: the worker's CPU % over 10 s idle, its RSS, memory per tunnel (autossh + ssh)
* one full reconcile pass over 1,000 desired-stopped tunnels (in-process, same database)

Every process it starts is stopped at the end (worker, tunnels by process group, sshd).

Usage: .venv/bin/python bench/worker.py [--tunnels 100] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from harness import sshd_and_database  # noqa: E402


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(predicate, timeout: float = 30.0, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise SystemExit("timed out")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunnels", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    data = tmp / "data"
    from tests.procs import kill_group

    server, env = sshd_and_database(tmp)
    import psutil
    from django.contrib.auth import get_user_model

    from tests.procs import free_port
    from tunnels import processes, services
    from tunnels.models import Tunnel
    from tunnels.reconciler import Reconciler

    user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "tunnel_worker", "--node", "bench"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=open(tmp / "worker.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.0)
        target = socket.socket()
        target.bind(("127.0.0.1", 0))
        target.listen(512)
        target_port = target.getsockname()[1]

        def create(i: int) -> Tunnel:
            data_ = {
                "name": f"b{i}",
                "remote_host": server.destination,
                "ssh_port": server.port,
                "local_port": str(free_port()),
                "remote_port": str(target_port),
            }
            return services.create_tunnel(user, data_)

        def running(tunnel: Tunnel) -> bool:
            return Tunnel.objects.filter(pk=tunnel.pk, status="running").exists() and accepts(int(tunnel.local_port))

        latencies = []
        tunnels = []
        for i in range(20):
            began = time.monotonic()
            tunnel = create(i)
            wait(lambda t=tunnel: running(t))
            latencies.append(time.monotonic() - began)
            tunnels.append(tunnel)
        print(
            f"start latency (create → running + accepting), 20 tunnels: "
            f"p50 {pct(latencies, 0.5) * 1000:.0f} ms  p90 {pct(latencies, 0.9) * 1000:.0f} ms  "
            f"max {max(latencies) * 1000:.0f} ms"
        )

        recoveries = []
        for tunnel in tunnels[:5]:
            tunnel.refresh_from_db()
            old = tunnel.pid
            began = time.monotonic()
            os.kill(old, signal.SIGKILL)
            wait(
                lambda t=tunnel, o=old: (
                    Tunnel.objects.filter(pk=t.pk, status="running").exclude(pid=o).exists()
                    and accepts(int(t.local_port))
                )
            )
            recoveries.append(time.monotonic() - began)
        print(
            f"recovery after kill -9 autossh, 5 tunnels: p50 {pct(recoveries, 0.5) * 1000:.0f} ms  "
            f"max {max(recoveries) * 1000:.0f} ms"
        )

        for i in range(20, args.tunnels):
            tunnels.append(create(i))
        wait(lambda: Tunnel.objects.filter(status="running").count() == args.tunnels, timeout=120, step=0.2)
        time.sleep(2)  # let the last full passes finish
        proc = psutil.Process(worker.pid)
        proc.cpu_percent(None)
        time.sleep(args.idle)
        cpu = proc.cpu_percent(None)
        rss = proc.memory_info().rss
        found = processes.Scanner(data).scan()
        per_rss, per_uss = [], []
        for items in found.values():
            for item in items:
                group = [psutil.Process(item.pid), *(psutil.Process(p) for p in item.ssh_pids)]
                per_rss.append(sum(p.memory_info().rss for p in group))
                per_uss.append(sum(p.memory_full_info().uss for p in group))
        print(
            f"{args.tunnels} live tunnels: worker CPU {cpu:.2f} % over {args.idle:.0f} s idle, "
            f"worker RSS {rss / 2**20:.1f} MB"
        )
        print(
            f"memory per live tunnel (autossh + ssh): RSS {statistics.mean(per_rss) / 2**20:.1f} MB, "
            f"USS (private) {statistics.mean(per_uss) / 2**20:.2f} MB, over {len(per_rss)} tunnels"
        )

        # Stop everything, then time one pass over 1,000 desired-stopped tunnels.
        services.stop_all(Tunnel.objects.all())
        wait(lambda: not Tunnel.objects.exclude(status="stopped").exists(), timeout=60, step=0.1)
        other = get_user_model().objects.create_user("bench-stopped", password="x", is_staff=True)
        Tunnel.objects.bulk_create(
            [
                Tunnel(
                    owner=other,
                    name=f"s{i}",
                    hash=f"{i:032x}",
                    remote_host="u@h",
                    remote_port="80",
                    local_port=str(20000 + i),
                )
                for i in range(1000 - Tunnel.objects.count())
            ]
        )
        reconciler = Reconciler("bench-pass")
        reconciler.reconcile_once(full=True)
        times = []
        for _ in range(20):
            began = time.perf_counter()
            reconciler.reconcile_once(full=True)
            times.append(time.perf_counter() - began)
        idle = []
        for _ in range(50):
            began = time.perf_counter()
            reconciler.reconcile_once()
            idle.append(time.perf_counter() - began)
        print(
            f"full pass over {Tunnel.objects.count()} desired-stopped tunnels: "
            f"p50 {statistics.median(times) * 1000:.1f} ms  max {max(times) * 1000:.1f} ms; "
            f"idle pass (marker unchanged): p50 {statistics.median(idle) * 1000:.2f} ms"
        )
        target.close()
    finally:
        kill_group(worker)
        from tests.worker_fixtures import kill_tunnel_processes

        kill_tunnel_processes(data)
        kill_group(server.proc)


if __name__ == "__main__":
    main()
