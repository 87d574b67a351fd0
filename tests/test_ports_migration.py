"""tunnels 0004: existing -L tunnels claim their ports; a later duplicate keeps its
configuration but no port, is stopped and says why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = [pytest.mark.django_db(transaction=True)]
BEFORE = [("tunnels", "0003_identities_and_preflight")]
AFTER = [("tunnels", "0004_tunnel_listen_port")]


def migrate(tunnels_target):
    """Migrate ``tunnels`` to ``tunnels_target`` and every other app to its latest; the apps of that state."""
    executor = MigrationExecutor(connection)
    others = [leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] != "tunnels"]
    targets = [*others, *tunnels_target]
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_apps():
    apps = migrate(BEFORE)
    yield apps
    # Back to the latest state for the tests that follow, whatever happened.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_duplicates_keep_their_config_the_oldest_keeps_the_port(old_apps):
    User = old_apps.get_model("accounts", "User")
    Tunnel = old_apps.get_model("tunnels", "Tunnel")
    alice = User.objects.create(username="alice")
    bob = User.objects.create(username="bob")
    start = timezone.now() - timedelta(days=1)

    def row(owner, name, local_port, minutes, direction="remote_to_local"):
        return Tunnel.objects.create(
            owner=owner,
            name=name,
            remote_host="u@example.com",
            remote_port="80",
            local_port=local_port,
            direction=direction,
            hash=f"{name:0<32}"[:32],
            desired_state="running",
            created_at=start + timedelta(minutes=minutes),
        )

    victim = row(alice, "victim", "15001", 0)
    taker = row(bob, "taker", "[::1]:15001", 5)
    same_user = row(alice, "second", "0.0.0.0:15001", 9)
    remote = row(bob, "remote", "15001", 1, direction="local_to_remote")
    other = row(bob, "other", "15002", 2)
    broken = row(bob, "broken", "not a port", 3)

    new_apps = migrate(AFTER)
    Tunnel = new_apps.get_model("tunnels", "Tunnel")
    rows = {t.name: t for t in Tunnel.objects.all()}

    assert (rows["victim"].listen_port, rows["victim"].desired_state) == (15001, "running")
    assert (rows["other"].listen_port, rows["remote"].listen_port, rows["broken"].listen_port) == (15002, None, None)
    for name in ("taker", "second"):
        lost = rows[name]
        assert (lost.listen_port, lost.desired_state) == (None, "stopped")
        assert "local_port 15001 is also used by an older tunnel" in lost.last_error
        assert "change its local_port" in lost.last_error
        assert "alice" not in lost.last_error and "victim" not in lost.last_error
    assert rows["taker"].local_port == "[::1]:15001" and rows["second"].local_port == "0.0.0.0:15001"
    assert rows["remote"].desired_state == "running" and rows["remote"].last_error == ""
    assert {victim.pk, taker.pk, same_user.pk, remote.pk, other.pk, broken.pk} == {t.pk for t in rows.values()}
