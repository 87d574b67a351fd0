"""REST API v1 throughput through gunicorn on loopback, beside a constant-JSON ceiling view.

Starts its own gunicorn (temp data dir, SQLite, migrated; bench-only settings
``bench.ceiling_settings`` that add the ceiling views), with one user owning
1,000 tunnels, a second user for creates and one live worker row. Drives it
with a keep-alive load generator (threads < cores) and prints requests/s and
p50/p99 for:

* ceiling      GET /bench/ceiling           constant JSON, no middleware row (the ceiling)
* ceiling+hist GET /api/bench/ceiling       the same, plus the request-history INSERT every /api/ request pays
* drf-ceiling  GET /api/bench/drf-ceiling    the same body from a DRF view with the project's
               token authentication, permission, throttle and history row (Bearer token)
* status       GET /api/v1/status           no auth
* list-1       GET /api/v1/tunnels/?limit=1 (of 1,000), Bearer token: the fixed cost of
               an authenticated, recorded list request (token check, count, history row)
* list         GET /api/v1/tunnels/?limit=100 (of 1,000), Bearer token
* create       POST /api/v1/tunnels/        a new tunnel per request, Bearer token

then the ratios (goals: status >= 70 % of the ceiling, list >= 40 %).

Usage: .venv/bin/python bench/api.py [--seconds 5] [--threads N] [--workers 1] [--gthreads 4]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import threading
from collections.abc import Callable

from harness import (
    UNTHROTTLED,
    Request,
    Result,
    arguments,
    bench_env,
    drive,
    fixed,
    gunicorn,
    manage,
    postgres_database,
)

SETUP = """
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from accounts import tokens
from tunnels.models import Tunnel, WorkerNode
User = get_user_model()
lister = User.objects.create_user("lister", password="x", max_tunnels=100000)
creator = User.objects.create_user(
    "creator", password="x", max_tunnels=1000000, local_port_min=1024, local_port_max=65535
)
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
        "ceiling": fixed("GET", "/bench/ceiling"),
        "ceiling+hist": fixed("GET", "/api/bench/ceiling"),
        "drf-ceiling": fixed("GET", "/api/bench/drf-ceiling", listing),
        "status": fixed("GET", "/api/v1/status"),
        "list-1": fixed("GET", "/api/v1/tunnels/?limit=1", listing),
        "list": fixed("GET", "/api/v1/tunnels/?limit=100", listing),
        "create": create,
    }


def report(results: dict[str, Result], args: argparse.Namespace) -> None:
    print(
        f"gunicorn gthread {args.workers} worker(s) x {args.gthreads} threads, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}, "
        f"{args.threads} client thread(s), {args.seconds:g} s each"
    )
    for name, r in results.items():
        figures = f"{r.rps:8.0f} req/s  p50 {r.p50:7.2f} ms  p99 {r.p99:7.2f} ms  {r.size:7d} B"
        print(f"{name:13} {figures}  {json.dumps(r.statuses)}")
    goals = {"status": " (goal >= 70 %)", "list": " (goal >= 40 %)"}
    for base in ("ceiling", "ceiling+hist", "drf-ceiling"):
        ceiling = results[base].rps
        ratios = [
            f"{name} {results[name].rps / ceiling:6.1%}{goals.get(name, '') if base == 'ceiling' else ''}"
            for name in ("status", "list", "list-1", "drf-ceiling", "create")
            if name != base
        ]
        print(f"vs {base:13} " + "   ".join(ratios))


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gthreads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as data, postgres_database(args.postgres) as url:
        env = bench_env(
            data,
            {
                "DJANGO_SETTINGS_MODULE": "bench.ceiling_settings",  # adds the ceiling views
                "TUNNELSITE_THROTTLE_ANON": UNTHROTTLED,  # the ceilings and status are anonymous
            },
            database_url=url,
        )
        manage(env, "migrate", "--noinput")
        list_token, create_token = manage(env, "shell", "-c", SETUP).split()[-2:]
        probe = ("GET", "/bench/ceiling")
        with gunicorn(env, data, probe, workers=args.workers, threads=args.gthreads) as port:
            plan = scenarios(list_token, create_token)
            drive(port, plan["list"], 1.0, args.threads)  # warm-up: imports, connections, caches
            results = {name: drive(port, make, args.seconds, args.threads) for name, make in plan.items()}
            report(results, args)


if __name__ == "__main__":
    main()
