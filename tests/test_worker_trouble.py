"""Database trouble: the worker backs off, says so once per state change, and notes it on its node row.

A real worker against a throw-away PostgreSQL cluster that is stopped and started
again (tests/faultdb.py), and against the test's SQLite database locked by a
second connection.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests import faultdb
from tests.procs import kill_group, spawn, wait_for
from tests.webproc import own_databases
from tests.worker_fixtures import MANAGE, WORKER_TEST_ENV
from tunnels.models import WorkerNode

pytestmark = pytest.mark.timeout(180)


def trouble_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "database" in line or "Traceback" in line or "failed" in line]


@pytest.fixture
def pg_cluster():
    if faultdb.postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    with faultdb.cluster() as cluster:
        yield cluster


@own_databases
def test_postgresql_away_is_one_line_each_way_and_a_note_on_the_node(pg_cluster, tmp_path):
    url = pg_cluster.createdb("tunnelsite")
    env = {
        **os.environ,
        **WORKER_TEST_ENV,
        "DATABASE_URL": url,
        "TUNNELSITE_DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "x" * 40,
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run([sys.executable, str(MANAGE), "migrate", "-v0"], env=env, check=True, timeout=120)
    log = tmp_path / "worker.log"
    worker = spawn([sys.executable, str(MANAGE), "tunnel_worker", "--node", "pg-away"], log, env=env)
    try:
        with psycopg.connect(url, autocommit=True) as db:
            wait_for(lambda: db.execute("select 1 from tunnels_workernode").fetchone(), timeout=30, message="beat")
        pg_cluster.stop()
        away = 8.0
        time.sleep(away)
        during = trouble_lines(log.read_text())
        pg_cluster.start()
        wait_for(lambda: "database reachable again" in log.read_text(), timeout=30, message="recovery logged")

        assert worker.poll() is None
        assert len([line for line in during if "database unreachable:" in line]) == 1
        assert "Traceback" not in log.read_text()
        # Not a line per pass: one each way, plus the heartbeat's own note at the back-off's pace (0.25 s → 5 s).
        assert len(trouble_lines(log.read_text())) <= 9, log.read_text()
        with psycopg.connect(url, autocommit=True) as db:
            error, since = db.execute("select error, error_since from tunnels_workernode").fetchone()
        assert error.startswith("database unreachable for ") and since is not None
    finally:
        kill_group(worker, grace=5)
        print(log.read_text()[-5000:])


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="a SQLite lock")
def test_a_locked_sqlite_database_costs_a_bounded_number_of_log_lines(worker, transactional_db):
    path = Path(connection.settings_dict["NAME"]).resolve()
    wait_for(lambda: WorkerNode.objects.filter(name=worker.node).exists(), message="first beat")
    before = len(worker.log_text().splitlines())
    lock = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock: the worker's writes wait, then give up
        time.sleep(12)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    beat = WorkerNode.objects.get(name=worker.node).last_seen
    wait_for(lambda: WorkerNode.objects.get(name=worker.node).last_seen > beat, timeout=30, message="beating again")

    text = worker.log_text()
    assert "Traceback" not in text
    during = text.splitlines()[before:]
    assert len(during) <= 20, "\n".join(during)  # 12 s of lock: not a line per pass
