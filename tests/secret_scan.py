"""Where does a secret appear? Every place a test can look, for the "no secret leaks" checks.

``find_secret(secret, data_dir=..., worker_pid=...)`` lists each place the secret is found, in
any of its plain forms (see ``forms``): the rows of every database table (the tables the
database itself lists and every Django model's table, all columns), the SQLite database files as
bytes (main file, -wal, -journal, -shm: deleted rows and free pages included), every regular file
under the data dir (tunnel logs, the worker's log, known hosts), the environment and argv
(/proc/<pid>/environ, cmdline) of the worker, all its descendants and every other process (a
daemonised ssh master is no longer the worker's descendant), and every process's arguments as
``ps`` shows them.

An answer stored encrypted (Fernet under the server secret, tunnels.prompts) is not a plain form:
finding nothing is the expected result. The scanner's own tests (tests/test_secret_scan.py) plant
the secret in each kind of place and require it to be found, so an empty answer means something.
Nothing here writes to or locks the database files, and the SQLite files are read by a ``cat`` child:
closing a descriptor of this process on them would drop SQLite's POSIX locks (see ``_read_elsewhere``).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

SQLITE_SUFFIXES = ("", "-wal", "-journal", "-shm")
MIN_BASE64_CORE = 8  # shorter base64 fragments would match by chance


def forms(secret: str) -> dict[str, bytes]:
    """The secret as it would stand in a place that stores it unencrypted: as is, JSON-escaped,
    URL-encoded (a form post in a log), hex, and base64 (standard and URL-safe, at each of the three
    byte alignments it can have inside a longer encoded text)."""
    raw = secret.encode()
    found = {
        "plain": raw,
        "json": json.dumps(secret)[1:-1].encode(),
        "json-ascii": json.dumps(secret, ensure_ascii=True)[1:-1].encode(),
        "url-encoded": urllib.parse.quote(secret, safe="").encode(),
        "form-encoded": urllib.parse.quote_plus(secret).encode(),
        "hex": raw.hex().encode(),
    }
    for shift in range(3):
        core = _base64_core(raw, shift)
        if len(core) >= MIN_BASE64_CORE:
            found[f"base64/{shift}"] = core
            found[f"base64url/{shift}"] = core.translate(bytes.maketrans(b"+/", b"-_"))
    unique: dict[str, bytes] = {}
    for label, needle in found.items():
        if needle not in unique.values():
            unique[label] = needle
    return unique


def _base64_core(raw: bytes, shift: int) -> bytes:
    """The base64 characters that depend on ``raw`` alone when it starts ``shift`` bytes into a
    3-byte group: the group it shares with what precedes it, and a last group it shares with what
    follows, are left out."""
    encoded = base64.b64encode(b"\0" * shift + raw)
    start = 4 if shift else 0
    end = len(encoded) if (shift + len(raw)) % 3 == 0 else len(encoded) - 4
    return encoded[start:end]


def _matches(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [label for label, needle in needles.items() if needle in data]


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).encode()
    return str(value).encode()


# --- the database -----------------------------------------------------------------


def database_tables() -> list[str]:
    """Every table and view: what the database lists, and every Django model's table."""
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cursor:
        listed = set(connection.introspection.table_names(cursor, include_views=True))
    models = {model._meta.db_table for model in apps.get_models(include_auto_created=True)}
    missing = models - listed
    if missing:
        raise AssertionError(f"models whose tables the database does not list: {sorted(missing)}")
    return sorted(listed | models)


def scan_database(needles: dict[str, bytes]) -> list[str]:
    from django.db import connection

    places = []
    quote = connection.ops.quote_name
    for table in database_tables():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {quote(table)}")  # noqa: S608 - table names from the database
            columns = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
        for row in rows:
            for column, value in zip(columns, row, strict=True):
                for label in _matches(_as_bytes(value), needles):
                    places.append(f"database table {table} column {column} ({label})")
    return sorted(set(places))


def sqlite_files() -> list[Path]:
    """The files of the SQLite database in use (none on PostgreSQL or an in-memory database)."""
    from django.db import connection

    if connection.vendor != "sqlite":
        return []
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or "mode=memory" in name:
        return []
    return [Path(name + suffix) for suffix in SQLITE_SUFFIXES if Path(name + suffix).is_file()]


# --- files -------------------------------------------------------------------------------


def scan_file(path: Path, needles: dict[str, bytes], what: str = "file") -> list[str]:
    try:
        data = _read_elsewhere(path) if what == "sqlite file" else path.read_bytes()
    except (FileNotFoundError, PermissionError):
        return []
    return [f"{what} {path} at byte {data.find(needles[label])} ({label})" for label in _matches(data, needles)]


def _read_elsewhere(path: Path) -> bytes:
    """A file of the database this process has open, read by another process: closing a descriptor of
    our own on it would drop every POSIX lock this process holds on that file (fcntl locks are per
    process), and SQLite, no longer locked, then lost the test database ("disk I/O error", the file gone)."""
    done = subprocess.run(["cat", "--", str(path)], capture_output=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        raise FileNotFoundError(path)
    return done.stdout


def regular_files(root: Path) -> list[Path]:
    """Every regular file below ``root`` (links not followed; sockets and pipes left alone: opening a
    FIFO would block)."""
    found = []
    for folder, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            try:
                if stat.S_ISREG(path.lstat().st_mode):
                    found.append(path)
            except FileNotFoundError:
                continue
    return sorted(found)


# --- processes -----------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are alive now."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def scan_process(pid: int, needles: dict[str, bytes]) -> list[str]:
    places = []
    for part in ("environ", "cmdline"):
        try:
            data = Path(f"/proc/{pid}/{part}").read_bytes()
            name = Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile
        places += [f"process {pid} ({name}) {part} ({label})" for label in _matches(data, needles)]
    return places


def scan_processes(needles: dict[str, bytes], worker_pid: int | None) -> list[str]:
    """The environment and argv of every process on the machine: the worker and its descendants, and
    also what left its tree (an ssh master with ControlPersist forks into the background, re-parented
    away from the worker). With ``worker_pid`` the worker must be alive: a scan after it died would
    prove nothing about it."""
    import psutil

    if worker_pid is not None and not process_tree(worker_pid):
        raise AssertionError(f"worker {worker_pid} is not running: its environment cannot be scanned")
    places = []
    for pid in psutil.pids():
        places += scan_process(pid, needles)
    return places


def scan_ps(needles: dict[str, bytes]) -> list[str]:
    """``ps -eo args`` of every process on the machine (-ww: never cut to a terminal's width)."""
    output = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, check=True).stdout
    places = []
    for line in output.splitlines():
        pid = line.split(maxsplit=1)[0].decode()
        places += [f"ps -eo args: pid {pid} ({label})" for label in _matches(line, needles)]
    return places


# --- all of it -------------------------------------------------------------------------


def find_secret(
    secret: str, *, data_dir: Path | str, worker_pid: int | None = None, extra_files: Iterable[Path] = ()
) -> list[str]:
    """Every place ``secret`` appears in a plain form (empty when it is nowhere). ``extra_files``:
    more files, or folders whose files are all read, outside the data dir."""
    if len(secret) < 4:
        raise ValueError("a secret this short would be found by chance")
    needles = forms(secret)
    places = scan_database(needles)
    database_files = sqlite_files()
    for path in database_files:
        places += scan_file(path, needles, "sqlite file")
    skip = {path.resolve() for path in database_files}
    extra = [found for path in map(Path, extra_files) for found in (regular_files(path) if path.is_dir() else [path])]
    for path in [*regular_files(Path(data_dir)), *extra]:
        if path.resolve() not in skip:
            places += scan_file(path, needles)
    places += scan_processes(needles, worker_pid)
    places += scan_ps(needles)
    return places
