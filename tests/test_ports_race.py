"""Port claims under concurrency: real threads, each with its own database connection
(SQLite file or PostgreSQL), calling the service layer at once. The database decides."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from django.db import connection

from tests.factories import tunnel_data
from tunnels import services
from tunnels.models import ConfigBackup, Tunnel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
PARALLEL = 20


def run_at_once(count: int, attempt: Callable[[int], str]) -> list[str]:
    """``attempt(i)`` in ``count`` threads released together; each thread closes its connection."""
    barrier = threading.Barrier(count)
    results: list[str] = [""] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = attempt(index)
        except Exception as exc:  # the assertion below shows anything unexpected
            results[index] = f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return results


@pytest.fixture
def users(django_user_model):
    return [django_user_model.objects.create_user(f"racer{i}", password="racer-pass-123") for i in range(4)]


def test_twenty_parallel_creates_of_one_port_by_two_users_one_wins(users, data_dir):
    alice, bob = users[:2]

    def create(index: int) -> str:
        owner = alice if index % 2 else bob
        try:
            services.create_tunnel(owner, tunnel_data(name=f"race-{index}", local_port="20001"))
        except services.PortTaken as exc:
            return f"refused {exc.status}"
        return "won"

    results = run_at_once(PARALLEL, create)

    assert Counter(results) == {"won": 1, f"refused {409}": PARALLEL - 1}, results
    winner = Tunnel.objects.get()
    assert winner.listen_port == 20001
    # Refusals changed nothing: one backup (the winner's), one backup file.
    assert ConfigBackup.objects.count() == 1
    assert len(list((data_dir / "backups").rglob("*.json"))) == 1


def test_twenty_parallel_auto_assigned_ports_are_all_different(users, data_dir):
    data = tunnel_data()
    del data["local_port"]

    def create(index: int) -> str:
        owner = users[index % len(users)]
        tunnel = services.create_tunnel(owner, {**data, "name": f"auto-{index}"}, assign_port=True)
        return tunnel.local_port

    results = run_at_once(PARALLEL, create)

    assert all(port.isdigit() and 20000 <= int(port) <= 29999 for port in results), results
    assert len(set(results)) == PARALLEL
    assert sorted(Tunnel.objects.values_list("local_port", flat=True)) == sorted(results)
    assert ConfigBackup.objects.count() == PARALLEL
    assert len(list((data_dir / "backups").rglob("*.json"))) == PARALLEL
