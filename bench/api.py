"""REST API v1 throughput through gunicorn on loopback, beside a constant-JSON ceiling view.

Starts its own gunicorn (temp data dir, SQLite, migrated; bench-only settings
``bench.ceiling_settings`` that add the ceiling views), with one user owning
1,000 tunnels, a second user for creates and one live worker row. Drives it
with a keep-alive load generator (threads < cores) and prints requests/s and
p50/p99 for:

* ceiling      GET /bench/ceiling           constant JSON, no middleware row (the ceiling)
* ceiling+hist GET /api/bench/ceiling       the same, plus the request-history INSERT every /api/ request pays
* status       GET /api/v1/status           no auth
* list         GET /api/v1/tunnels/?limit=100 (of 1,000), Bearer token
* create       POST /api/v1/tunnels/        a new tunnel per request, Bearer token

then the ratios (goals: status >= 70 % of the ceiling, list >= 40 %).

Usage: .venv/bin/python bench/api.py [--seconds 5] [--threads N] [--workers 1] [--gthreads 4]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

SETUP = """
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts import tokens
from tunnels.models import Tunnel, WorkerNode
User = get_user_model()
lister = User.objects.create_user("lister", password="x", max_tunnels=100000)
creator = User.objects.create_user("creator", password="x", max_tunnels=1000000, local_port_max=65535)
rows = []
for i in range(1000):
    t = Tunnel(owner=lister, name=f"t{i}", remote_host="u@example.com", remote_port="80", local_port=str(20000 + i))
    t.hash = t.compute_hash()
    rows.append(t)
Tunnel.objects.bulk_create(rows)
# Live for the whole run: /status answers 200.
WorkerNode.objects.create(name="bench", last_seen=timezone.now() + timedelta(days=1))
print(tokens.mint(lister, label="bench")[1])
print(tokens.mint(creator, label="bench")[1])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/bench/ceiling")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


Request = tuple[str, str, dict, bytes | None]


def drive(port: int, make: Callable[[], Request], seconds: float, threads: int) -> dict:
    """Keep-alive clients sending ``make()`` requests for ``seconds``; rps, p50, p99, status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        seen: dict[int, int] = {}
        while time.monotonic() < stop_at:
            method, path, headers, body = make()
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            seen[response.status] = seen.get(response.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for code, count in seen.items():
                statuses[code] = statuses.get(code, 0) + count

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "statuses": statuses,
    }


def scenarios(list_token: str, create_token: str) -> dict[str, Callable[[], Request]]:
    ports = itertools.count(30000)
    counter_lock = threading.Lock()

    def create() -> Request:
        with counter_lock:
            port = next(ports)
        body = json.dumps({"name": f"c{port}", "remote_host": "u@example.com", "remote_port": "80",
                           "local_port": str(port % 64000 + 1024), "desired_state": "stopped"}).encode()  # fmt: skip
        headers = {"Authorization": f"Bearer {create_token}", "Content-Type": "application/json"}
        return "POST", "/api/v1/tunnels/", headers, body

    listing = {"Authorization": f"Bearer {list_token}"}
    return {
        "ceiling": lambda: ("GET", "/bench/ceiling", {}, None),
        "ceiling+hist": lambda: ("GET", "/api/bench/ceiling", {}, None),
        "status": lambda: ("GET", "/api/v1/status", {}, None),
        "list": lambda: ("GET", "/api/v1/tunnels/?limit=100", listing, None),
        "create": create,
    }


def report(results: dict[str, dict], args) -> None:
    print(
        f"gunicorn gthread {args.workers} worker(s) x {args.gthreads} threads, SQLite, "
        f"{args.threads} client thread(s), {args.seconds:g} s each"
    )
    for name, r in results.items():
        print(
            f"{name:13} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
            f"{json.dumps(r['statuses'])}"
        )
    for base in ("ceiling", "ceiling+hist"):
        ceiling = results[base]["rps"]
        print(
            f"vs {base:13} status {results['status']['rps'] / ceiling:6.1%} (goal >= 70 %)   "
            f"list {results['list']['rps'] / ceiling:6.1%} (goal >= 40 %)   "
            f"create {results['create']['rps'] / ceiling:6.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gthreads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as data:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.ceiling_settings",
            "TUNNELSITE_DATA_DIR": data,
            "TUNNELSITE_THROTTLE_USER": "100000000/minute",
            "TUNNELSITE_THROTTLE_ANON": "100000000/minute",
            "LOG_LEVEL": "ERROR",
        }
        env.pop("DATABASE_URL", None)
        manage(env, "migrate", "--noinput")
        list_token, create_token = manage(env, "shell", "-c", SETUP).split()[-2:]
        port = free_port()
        with open(Path(data) / "gunicorn.log", "w") as log:
            gunicorn = subprocess.Popen(
                [str(Path(PY).parent / "gunicorn"), "tunnelsite.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", str(args.workers), "--threads", str(args.gthreads), "--worker-class", "gthread",
                 "--no-control-socket", "--log-level", "warning"],
                cwd=ROOT, env=env, start_new_session=True, stderr=log,
            )  # fmt: skip
            try:
                wait_listening(port, gunicorn)
                plan = scenarios(list_token, create_token)
                drive(port, plan["list"], 1.0, args.threads)  # warm-up: imports, connections, caches
                results = {name: drive(port, make, args.seconds, args.threads) for name, make in plan.items()}
                report(results, args)
            finally:
                os.killpg(gunicorn.pid, signal.SIGTERM)
                try:
                    gunicorn.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(gunicorn.pid, signal.SIGKILL)
                    gunicorn.wait()


if __name__ == "__main__":
    main()
