"""Failover on PostgreSQL: two worker nodes, kill -9 of one worker AND its tunnels (a lost machine).

Starts its own sshd on loopback, a fresh PostgreSQL database (the name of ``--postgres``; dropped
afterwards), two ``manage.py tunnel_worker`` nodes and N ``-L`` tunnels (started with
``services.start_all``, spread over both nodes). Each round kills the node that runs the most tunnels
(its worker and every process of its tunnels, SIGKILL) and times until every tunnel is ``running`` on
the survivor and carries traffic; the killed node then comes back empty. Meanwhile the process table
is watched for a tunnel running twice, and afterwards no tunnel may have two open sessions.
Goal: every round within lease + 3 s.

Usage: .venv/bin/python bench/scale_failover.py --postgres postgres://postgres@127.0.0.1:5432/NAME
       [--tunnels 20] [--rounds 3] [--lease SECONDS]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from scale_tools import Target, Worker, carries, local_ports, raise_nofile, setup, start_sshd, wait_up


@contextmanager
def fresh_database(url: str):
    """The database ``url`` names, created empty for this run and dropped afterwards."""
    import psycopg

    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_tunnels(server, target: Target, count: int):
    from django.contrib.auth import get_user_model

    from tunnels import services
    from tunnels.models import Tunnel

    owner = get_user_model().objects.create_user("failover", password="x", is_staff=True)
    items = [
        {"name": f"f{port}", "remote_host": server.destination, "ssh_port": server.port,
         "local_port": str(port), "remote_port": str(target.port)}
        for port in local_ports(count)
    ]  # fmt: skip
    services.replace_all(owner, items)
    return owner, {pk: int(port) for pk, port in Tunnel.objects.filter(owner=owner).values_list("pk", "local_port")}


def kill_node(worker: Worker) -> list[int]:
    """SIGKILL the worker and every process of the tunnels it runs; their pids."""
    from tunnels import processes

    worker.kill9()
    killed = []
    for items in processes.Scanner().scan().values():
        for item in items:
            if item.node == worker.node:
                os.killpg(item.pgid, signal.SIGKILL)
                killed.append(item.pid)
    return killed


def twice() -> int:
    """Tunnels with more than one live autossh right now (on any node)."""
    from tunnels import processes

    return sum(1 for items in processes.Scanner().scan().values() if len([i for i in items if not i.orphan]) > 1)


def one_round(owner, ports: dict[int, int], victim: Worker, survivor: Worker, timeout: float) -> tuple[float, int]:
    """Seconds until every tunnel runs on ``survivor`` and carries traffic; how often one ran twice."""
    from tunnels.models import Status, Tunnel

    began = time.monotonic()
    killed = set(kill_node(victim))
    doubles = 0
    while time.monotonic() - began < timeout:
        doubles += twice()
        rows = Tunnel.objects.filter(owner=owner).values_list("status", "node", "pid", "local_port")
        if all(s == Status.RUNNING and n == survivor.node and p not in killed for s, n, p, _ in rows) and all(
            carries(int(port)) for *_, port in rows
        ):
            return time.monotonic() - began, doubles
        time.sleep(0.05)
    return float("inf"), doubles


def open_twice(owner) -> int:
    from django.db.models import Count

    from tunnels.models import TunnelSession

    sessions = TunnelSession.objects.filter(owner=owner, ended_at=None).values("tunnel_uuid")
    return sessions.annotate(n=Count("id")).filter(n__gt=1).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, metavar="URL")
    parser.add_argument("--tunnels", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", type=int, default=None, help="TUNNELSITE_WORKER_LEASE (default: the setting's)")
    args = parser.parse_args()
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    server = start_sshd(tmp / "sshd", max_startups=200)
    target = Target()
    workers: list[Worker] = []
    try:
        with fresh_database(args.postgres) as url:
            extra = {"DATABASE_URL": url, "TUNNELSITE_SSH_IDENTITY": str(server.client_key)}
            if args.lease:
                extra["TUNNELSITE_WORKER_LEASE"] = str(args.lease)
            env = setup(tmp, extra)
            run(args, env, tmp, server, target, workers)
            for worker in workers:  # before the database goes
                worker.cleanup()
            workers.clear()
    finally:
        for worker in workers:
            worker.cleanup()
        target.close()
        from tests.sshd import stop_sshd
        from tests.worker_fixtures import kill_tunnel_processes

        kill_tunnel_processes(tmp / "data")
        stop_sshd(server)


def run(args, env: dict[str, str], tmp: Path, server, target: Target, workers: list[Worker]) -> None:
    from django.conf import settings

    from tunnels import services
    from tunnels.models import Tunnel

    nodes = {name: Worker(env, tmp / f"worker-{name}.log", node=name).start() for name in ("node-a", "node-b")}
    workers.extend(nodes.values())
    owner, ports = make_tunnels(server, target, args.tunnels)
    began = time.monotonic()
    services.start_all(Tunnel.objects.filter(owner=owner))
    up = wait_up(owner, ports, began, carries, 120)
    spread = Counter(Tunnel.objects.filter(owner=owner).values_list("node", flat=True))
    lease = settings.WORKER_LEASE_SECONDS
    print(f"\nfailover on PostgreSQL: {args.tunnels} tunnels, 2 nodes, lease {lease} s (goal: lease + 3 s)")
    print(f"  all running after {max(up.done.values(), default=0):.2f} s, spread {dict(spread)}")
    times = []
    for round_no in range(1, args.rounds + 1):
        spread = Counter(Tunnel.objects.filter(owner=owner).values_list("node", flat=True))
        victim_name = spread.most_common(1)[0][0]
        victim = nodes[victim_name]
        survivor = next(w for name, w in nodes.items() if name != victim_name)
        seconds, doubles = one_round(owner, ports, victim, survivor, timeout=lease + 60)
        times.append(seconds)
        print(
            f"  round {round_no}: kill -9 {victim_name} ({spread[victim_name]} tunnels) → all {args.tunnels} "
            f"running on {survivor.node} after {seconds:.2f} s; ran twice {doubles}x, "
            f"open twice {open_twice(owner)}"
        )
        nodes[victim_name] = Worker(env, tmp / f"worker-{victim_name}.log", node=victim_name).start()
        workers.append(nodes[victim_name])
    print(f"  median {statistics.median(times):.2f} s, max {max(times):.2f} s (goal <= {lease + 3} s every time)")


if __name__ == "__main__":
    main()
