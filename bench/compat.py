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
import json
import random
import tempfile
from collections.abc import Callable

from harness import Request, Result, arguments, bench_env, drive, fixed, gunicorn, manage

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


def measure(port: int, token: str, prefixes: list[str], args: argparse.Namespace) -> dict[str, Result]:
    """Requests/s and latencies of each read endpoint, all as the owner of the 1,000 tunnels."""
    auth = {"Authorization": f"Bearer {token}"}
    scenarios: dict[str, Callable[[], Request]] = {
        "list": fixed("GET", "/list", auth),
        "status": fixed("GET", "/status", auth),
        "config": fixed("GET", "/config", auth),
        "config-one": lambda: ("GET", f"/config/{random.choice(prefixes)}", auth, None),
    }
    drive(port, scenarios["list"], 1.0, args.threads)  # warm-up
    return {name: drive(port, make, args.seconds, args.threads) for name, make in scenarios.items()}


def report(results: dict[str, Result], queries: dict, args: argparse.Namespace) -> None:
    print(
        f"gunicorn gthread 1 worker x {args.gthreads} threads, SQLite, {TUNNELS} tunnels for one user, "
        f"{args.threads} client thread(s), {args.seconds:g} s each"
    )
    for name, r in results.items():
        print(
            f"{name:11} {r.rps:7.0f} req/s  p50 {r.p50:7.2f} ms  p99 {r.p99:7.2f} ms  "
            f"{r.size:7d} B  {json.dumps(r.statuses)}"
        )
    print("queries per request (10 tunnels -> 1,000 tunnels), in-process:")
    for path, counts in queries.items():
        print(f"  GET {path:18} {counts['10'][0]} -> {counts['1000'][0]}  (status {counts['1000'][1]})")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--gthreads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compat-") as data:
        env = bench_env(data)
        manage(env, "migrate", "--noinput")
        big_token, small_token, hashes, small_hash = manage(env, "shell", "--no-imports", "-c", SETUP).split()[-4:]
        prefixes = [h[:8] for h in hashes.split(",")]
        with gunicorn(env, data, probe=("OPTIONS", "/list"), threads=args.gthreads) as port:
            results = measure(port, big_token, prefixes, args)
        env["COMPAT_BENCH_ARGS"] = f"{big_token} {small_token} {prefixes[0]} {small_hash[:8]}"
        queries = json.loads(manage(env, "shell", "--no-imports", "-c", QUERIES).splitlines()[-1])
    report(results, queries, args)


if __name__ == "__main__":
    main()
