"""The secret scanner (tests/secret_scan.py) finds a planted secret in every kind of place it
searches: a database row (a model's table and a raw table), the SQLite files (also after the row
was deleted), a file deep in the data dir, a descendant process's argv and environment, and
``ps``. A scanner that finds nothing proves nothing; these tests make its empty answers count.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap

import pytest
from django.db import connection

from tests.procs import kill_group, spawn, wait_for
from tests.secret_scan import find_secret, forms, process_tree
from tunnels import sshkeys

pytestmark = pytest.mark.timeout(60)


def new_secret() -> str:
    return f's3cret-{secrets.token_hex(8)}!&"/ü'


def kinds(places: list[str]) -> set[str]:
    """Places without their form and offset: ``file /x at byte 3 (json)`` → ``file /x``."""
    return {re.sub(r"( at byte \d+)? \([^()]*\)$", "", place) for place in places}


def test_forms_find_the_secret_however_it_is_spelled_plainly():
    secret = new_secret()
    needles = forms(secret)
    spelled = {
        "plain": f"x{secret}y".encode(),
        "json": json.dumps({"answer": secret}).encode(),
        "json-ascii": json.dumps({"answer": secret}, ensure_ascii=True).encode(),
        "url": f"answer={secret}".encode().replace(secret.encode(), needles["url-encoded"]),
        "hex": f"00{secret.encode().hex()}ff".encode(),
    }
    for prefix in ("", "a", "ab", "abc"):  # every alignment inside a longer base64 text
        blob = f"{prefix}answer={secret};".encode()
        spelled[f"base64 {prefix!r}"] = base64.b64encode(blob)
        spelled[f"base64url {prefix!r}"] = base64.urlsafe_b64encode(blob)
    missed = [name for name, data in spelled.items() if not any(needle in data for needle in needles.values())]
    assert missed == []

    # Encrypted (as tunnels.prompts stores answers), it is not there in any form.
    token = sshkeys.encrypt(secret.encode()).encode()
    assert [label for label, needle in needles.items() if needle in token] == []


@pytest.mark.django_db(transaction=True)
def test_finds_a_database_row_in_a_model_table_and_a_raw_table(django_user_model, data_dir):
    secret = new_secret()
    assert find_secret(secret, data_dir=data_dir) == []

    user = django_user_model.objects.create_user("scan-probe", first_name=f"a {secret} b")
    blob_type = "bytea" if connection.vendor == "postgresql" else "BLOB"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE scan_probe (data {blob_type})")
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO scan_probe (data) VALUES (%s)", [b"\x00\x01" + secret.encode() + b"\xff"])
        places = kinds(find_secret(secret, data_dir=data_dir))
        users = django_user_model._meta.db_table
        assert {f"database table {users} column first_name", "database table scan_probe column data"} <= places
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE scan_probe")

    user.delete()
    places = kinds(find_secret(secret, data_dir=data_dir))
    assert not any(place.startswith("database table") for place in places)
    if connection.vendor == "sqlite":
        # Gone from the tables, still in the database's bytes (a free page or the write-ahead log).
        assert any(place.startswith("sqlite file") for place in places), places


@pytest.mark.django_db(transaction=True)
def test_an_encrypted_secret_in_the_database_is_not_found(django_user_model, data_dir):
    secret = new_secret()
    django_user_model.objects.create_user("scan-probe", last_name=sshkeys.encrypt(secret.encode())[:150])
    assert find_secret(secret, data_dir=data_dir) == []


@pytest.mark.django_db
def test_finds_a_file_deep_in_the_data_dir_and_ignores_pipes(data_dir, tmp_path):
    secret = new_secret()
    deep = data_dir / "logs" / "7" / "tunnel.log"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"ssh: connecting\n" + secret.encode() + b"\n")
    encoded = data_dir / "state.json"
    encoded.write_text(json.dumps({"blob": base64.b64encode(f"pw={secret}".encode()).decode()}))
    os.mkfifo(data_dir / "pipe")  # opening a FIFO to read would block: the walk must skip it
    outside = tmp_path / "outside.txt"
    outside.write_text(secret)
    (data_dir / "link").symlink_to(outside)  # links are not followed out of the data dir

    places = find_secret(secret, data_dir=data_dir)
    assert kinds(places) == {f"file {deep}", f"file {encoded}"}
    assert f"file {deep} at byte 16 (plain)" in places
    assert any(place.startswith(f"file {encoded} at byte ") and "(base64" in place for place in places)

    assert f"file {outside} at byte 0 (plain)" in find_secret(secret, data_dir=data_dir, extra_files=[outside])
    assert f"file {outside} at byte 0 (plain)" in find_secret(secret, data_dir=data_dir, extra_files=[tmp_path])


# A stand-in worker: worker -> middle -> a child with the secret in argv, and a daemon with it in its
# environment that left the tree (as an ssh master with ControlPersist does: the process that started
# it exits, so it is re-parented away from the worker). The secret reaches them in a file, so neither
# the worker nor the middle process holds it in argv or environment.
STANDIN = textwrap.dedent(
    """
    import os, subprocess, sys, time
    role, secret_file = sys.argv[1], sys.argv[2]
    secret = open(secret_file).read()
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    if role == "worker":
        subprocess.Popen([sys.executable, __file__, "middle", secret_file])
    elif role == "middle":
        subprocess.Popen([*sleep, "-" * 5000, secret])
        subprocess.run([sys.executable, __file__, "daemon", secret_file])
    else:
        subprocess.Popen(sleep, env={"PATH": os.environ["PATH"], "PROBE": secret})
        sys.exit(0)
    time.sleep(120)
    """
)
PROCESS_PLACE = re.compile(r"process (\d+) \(.*\) (environ|cmdline) \(")


def process_places(places: list[str]) -> set[tuple[int, str]]:
    return {(int(match[1]), match[2]) for match in map(PROCESS_PLACE.match, places) if match}


def environ_holds(pid: int, secret: str) -> bool:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return secret.encode() in handle.read()


@pytest.mark.django_db
def test_finds_argv_and_environment_in_and_out_of_the_workers_tree_and_ps(data_dir, tmp_path):
    import psutil

    secret = new_secret()
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret)
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    worker = spawn([sys.executable, str(script), "worker", str(secret_file)], tmp_path / "standin.log")
    try:

        def group() -> list:
            return [p for p in psutil.process_iter() if _pgid(p.pid) == worker.pid]

        wait_for(lambda: len(group()) == 4 and len(process_tree(worker.pid)) == 3, message="4 processes")
        _, middle, argv_child = process_tree(worker.pid)
        daemon = next(p.pid for p in group() if p.pid not in (worker.pid, middle, argv_child))
        assert environ_holds(daemon, secret) and not environ_holds(worker.pid, secret)

        places = find_secret(secret, data_dir=data_dir, worker_pid=worker.pid)
        # Not the worker, not the middle process: exactly where the secret is.
        assert process_places(places) == {(argv_child, "cmdline"), (daemon, "environ")}
        assert f"ps -eo args: pid {argv_child} (plain)" in places  # past 5,000 characters of argv
        assert {place for place in kinds(places) if not place.startswith("process ")} == {
            f"ps -eo args: pid {argv_child}"
        }
    finally:
        kill_group(worker)

    with pytest.raises(AssertionError, match="is not running"):
        find_secret(secret, data_dir=data_dir, worker_pid=worker.pid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


LOCK_PROBE = textwrap.dedent(
    """
    import sqlite3, sys
    try:
        sqlite3.connect(sys.argv[1], timeout=0).execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        print(exc)
    else:
        print("got the write lock")
    """
)


@pytest.mark.django_db(transaction=True)
def test_scanning_the_sqlite_files_keeps_this_processs_locks_on_them(data_dir):
    """fcntl locks belong to the process: had the scan opened and closed the database's files here, SQLite's
    locks would be gone (another writer could write under us; the test database was lost that way once)."""
    from django.db import transaction

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's files only")
    with transaction.atomic():  # IMMEDIATE (tunnelsite.env): this process holds the write lock now
        connection.cursor().execute("SELECT 1")

        def probe() -> str:
            name = connection.settings_dict["NAME"]
            return subprocess.run([sys.executable, "-c", LOCK_PROBE, name], capture_output=True, text=True).stdout

        assert probe().strip() == "database is locked"
        assert find_secret(new_secret(), data_dir=data_dir) == []
        assert probe().strip() == "database is locked"
