"""Replay issue 14's fault table against a running tunnelsite and print each row's figures.

Every row starts a fresh stack (bench/faultstack.py: gunicorn 2 x 4 threads and
``manage.py tunnel_worker`` with default settings as ``bin/run`` starts them, a real
sshd on loopback, 5 ``-L`` and 5 ``-R`` tunnels of an ordinary user with an SSH key,
traffic checked through every tunnel every 0.25 s), injects one fault and prints what
it measured next to what the issue expects (``should:``), each check marked PASS/FAIL.

Rows (``--rows a,b``; default all):
  ssh-2s        SSH server down 2 s, then back
  ssh-11s       SSH server down 11 s
  ssh-45s       SSH server down 45 s
  worker-kill   worker SIGKILLed during a start-all of 20+ tunnels, restarted
  autossh-kill  kill -9 of an autossh (one -L, one -R)
  postgres      PostgreSQL stopped 30 s (a throw-away cluster of this script's own; needs root and
                /usr/lib/postgresql/*/bin; ``--postgres`` runs it even when --rows leaves it out)
  sqlite-lock   SQLite write lock held 20 s by another process
  disk-full     data dir on a full disk (a small tmpfs, mounted here as root)
  hanging       200 concurrent reads + 20 start?wait=30 to an SSH server that accepts and never speaks

``--quick`` shortens the outages and counts (for the smoke test and trial runs). Ports: 46000-46999.

Usage: .venv/bin/python bench/faults.py [--rows ssh-2s,autossh-kill] [--quick] [--postgres] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fault_rows  # noqa: E402
from faultstack import Ports, sqlite_template  # noqa: E402

ROWS: dict[str, tuple[str, Callable]] = {
    "ssh-2s": ("SSH server down 2 s, then back", fault_rows.ssh_short),
    "ssh-11s": ("SSH server down ~11 s", fault_rows.ssh_medium),
    "ssh-45s": ("SSH server down 45 s", fault_rows.ssh_long),
    "worker-kill": ("worker SIGKILLed during a start-all, restarted", fault_rows.worker_kill),
    "autossh-kill": ("kill -9 of an autossh", fault_rows.autossh_kill),
    "postgres": ("PostgreSQL stopped 30 s", fault_rows.postgres_down),
    "sqlite-lock": ("SQLite write lock held 20 s by another process", fault_rows.sqlite_lock),
    "disk-full": ("data dir on a full disk", fault_rows.disk_full),
    "hanging": ("200 concurrent reads + 20 start?wait=30 to a hanging server", fault_rows.hanging_server),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter outages and fewer tunnels")
    parser.add_argument("--postgres", action="store_true", help="also run the postgres row")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = parser.parse_args()
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    if args.postgres and "postgres" not in args.rows:
        args.rows.append("postgres")
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows are {', '.join(ROWS)}")
    return args


def setup_django(root: Path) -> None:
    """Django in this process only for the process helpers (scanner, stop_group, agents): its
    settings point at an empty data dir, never at a row's database."""
    (root / "django").mkdir()
    os.environ["TUNNELSITE_DATA_DIR"] = str(root / "django")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunnelsite.settings")
    import django

    django.setup()


def main() -> int:
    args = parse()
    root = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    setup_django(root)
    from tunnels import processes

    # Tunnels outlive a SIGKILLed worker: re-parented here, they are reaped here (as under bin/run's init).
    processes.become_subreaper()
    ports = Ports()
    failures = errors = 0
    # A SIGTERM (a test's timeout, Ctrl-C's cousin) unwinds through every row's finally: nothing is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(
        f"faults.py: {len(args.rows)} row(s){' (quick)' if args.quick else ''}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    try:
        template = sqlite_template(root)
        for name in args.rows:
            title, run = ROWS[name]
            load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
            print(f"\n[{name}] {title}    (load average {load})", flush=True)
            began = time.monotonic()
            try:
                checks = run(root / name, ports, template, args.quick)
            except Exception:  # one broken row must not hide the others' figures
                traceback.print_exc()
                print(f"  ERROR: the row did not finish ({time.monotonic() - began:.0f} s)", flush=True)
                errors += 1
                continue
            finally:
                ports.release()
            failures += sum(1 for check in checks if check.passed is False)
            print(f"  ({time.monotonic() - began:.0f} s)", flush=True)
    finally:
        processes.reap_zombie_tunnels()
        if args.keep:
            print(f"\nlogs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{failures} check(s) failed" if failures else "\nevery check passed")
    if errors:
        print(f"{errors} row(s) did not finish")
    # Failed checks are figures (the fixes land row by row); a row that could not run is the script's failure.
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
