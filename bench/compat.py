"""autossh-compatible API read throughput through gunicorn on loopback, 1,000 tunnels for one user.

Starts its own gunicorn (gthread, temp data dir, SQLite, migrated, ``--no-control-socket``),
creates one user owning 1,000 tunnels and an API token, then drives each endpoint with
keep-alive clients (threads < cores) and prints requests/s and p50/p99 for:

* list         GET /list                the configuration view of all 1,000
* status       GET /status              the observed status of all 1,000
* config       GET /config              every tunnel object
* config-one   GET /config/<prefix>     an 8-character prefix of a random tunnel

Then the SQL queries per request (in-process, same database) at 10 and 1,000 tunnels:
they must not grow with the number of tunnels. Goal: p50 under 25 ms at 1,000 tunnels
(the original bash server takes ~1.8 s for /list with 50).

Usage: .venv/bin/python bench/compat.py [--seconds 5] [--threads N] [--gthreads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
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
TUNNELS = 1000

SETUP = f"""
from django.contrib.auth import get_user_model
from accounts import tokens
from tunnels.models import Tunnel
User = get_user_model()
owner = User.objects.create_user("compat-bench", password="x", max_tunnels=100000)
small = User.objects.create_user("compat-small", password="x")
rows = []
for user, count in ((owner, {TUNNELS}), (small, 10)):
    for i in range(count):
        t = Tunnel(owner=user, name=f"t{{i}}", remote_host="u@example.com", remote_port="80",
                   local_port=str(20000 + i), interactive=i % 10 == 0)
        t.hash = t.compute_hash()
        rows.append(t)
Tunnel.objects.bulk_create(rows)
print(tokens.mint(owner, label="bench")[1])
print(tokens.mint(small, label="bench")[1])
print(",".join(Tunnel.objects.filter(owner=owner).values_list("hash", flat=True)))
print(Tunnel.objects.filter(owner=small).first().hash)
"""

# Query counts per request, measured in-process with Django's test client.
QUERIES = """
import json, os
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
big, small, prefix_big, prefix_small = os.environ["COMPAT_BENCH_ARGS"].split()
result = {}
for label, token, prefix in (("1000", big, prefix_big), ("10", small, prefix_small)):
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    client.get("/list")  # the token's last-used write happens at most once a minute
    for path in ("/list", "/status", "/config", f"/config/{prefix}", "/logs"):
        with CaptureQueriesContext(connection) as ctx:
            status = client.get(path).status_code
        result.setdefault(path.replace(prefix, "<prefix>"), {})[label] = (len(ctx.captured_queries), status)
print(json.dumps(result))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{done.stderr}")
    return done.stdout


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("OPTIONS", "/list")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def drive(port: int, make_path: Callable[[], str], token: str, seconds: float, threads: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        seen: dict[int, int] = {}
        size = 0
        while time.monotonic() < stop_at:
            path = make_path()
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            size = len(response.read())
            mine.append(time.perf_counter() - started)
            seen[response.status] = seen.get(response.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            sizes.append(size)
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
        "bytes": max(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--gthreads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compat-") as data:
        env = {
            **os.environ,
            "TUNNELSITE_DATA_DIR": data,
            "TUNNELSITE_THROTTLE_USER": "100000000/minute",
            "LOG_LEVEL": "ERROR",
        }
        env.pop("DATABASE_URL", None)
        manage(env, "migrate", "--noinput")
        big_token, small_token, hashes, small_hash = manage(env, "shell", "--no-imports", "-c", SETUP).split()[-4:]
        prefixes = [h[:8] for h in hashes.split(",")]
        port = free_port()
        with open(Path(data) / "gunicorn.log", "w") as log:
            gunicorn = subprocess.Popen(
                [str(Path(PY).parent / "gunicorn"), "tunnelsite.wsgi", "--bind", f"127.0.0.1:{port}",
                 "--workers", "1", "--threads", str(args.gthreads), "--worker-class", "gthread",
                 "--no-control-socket", "--log-level", "warning"],
                cwd=ROOT, env=env, start_new_session=True, stderr=log,
            )  # fmt: skip
            try:
                wait_listening(port, gunicorn)
                scenarios = {
                    "list": lambda: "/list",
                    "status": lambda: "/status",
                    "config": lambda: "/config",
                    "config-one": lambda: f"/config/{random.choice(prefixes)}",
                }
                drive(port, scenarios["list"], big_token, 1.0, args.threads)  # warm-up
                results = {
                    name: drive(port, make, big_token, args.seconds, args.threads) for name, make in scenarios.items()
                }
            finally:
                os.killpg(gunicorn.pid, signal.SIGTERM)
                gunicorn.wait(timeout=15)
        env["COMPAT_BENCH_ARGS"] = f"{big_token} {small_token} {prefixes[0]} {small_hash[:8]}"
        queries = json.loads(manage(env, "shell", "--no-imports", "-c", QUERIES).splitlines()[-1])
    print(
        f"gunicorn gthread 1 worker x {args.gthreads} threads, SQLite, {TUNNELS} tunnels for one user, "
        f"{args.threads} client thread(s), {args.seconds:g} s each"
    )
    for name, r in results.items():
        print(
            f"{name:11} {r['rps']:7.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
            f"{r['bytes']:7d} B  {json.dumps(r['statuses'])}"
        )
    print("queries per request (10 tunnels -> 1,000 tunnels), in-process:")
    for path, counts in queries.items():
        print(f"  GET {path:18} {counts['10'][0]} -> {counts['1000'][0]}  (status {counts['1000'][1]})")


if __name__ == "__main__":
    main()
