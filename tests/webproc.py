"""A real tunnelsite web server for fault tests: ``manage.py`` in a subprocess and gunicorn as ``bin/run``
starts it (2 workers x 4 threads), on a free port, with its own data dir and database; killed by PID.
``http()`` is a plain urllib client that keeps cookies and times every answer."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.procs import free_port, kill_group, port_open, spawn, wait_for

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))

# A test that starts its own databases and web stack runs the same whatever DATABASE_URL says: CI's
# PostgreSQL pass would only repeat it, so it runs in the SQLite pass alone.
own_databases = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="starts its own databases: checked in the SQLite pass"
)


def site_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("PYTEST")}
    env.update(TUNNELSITE_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="tunnelsite.settings", **extra)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


PASSWORD = "bob-pass-12345"  # noqa: S105 - a throw-away test user's


def prepare(env: dict[str, str], username: str = "bob", password: str = PASSWORD) -> str:
    """Migrate, make a user, and return a token of theirs (read, operate, write)."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "createuser", username, "--password-stdin", stdin=password + "\n")
    return manage(env, "createtoken", username).strip().splitlines()[-1]


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, workers: int = 2, threads: int = 4) -> Iterator[str]:
    port = free_port()
    argv = [GUNICORN, "tunnelsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    proc = spawn([*argv, "--threads", str(threads), "--no-control-socket"], log, env=env, cwd=ROOT)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=30, message="gunicorn to listen")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        kill_group(proc)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    took: float

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class Browser:
    """urllib with a cookie jar (sessions, CSRF) and an optional bearer token."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base, token
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def __call__(self, method: str, path: str, data: dict | None = None, form: dict | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = None
        if data is not None:
            body, headers["Content-Type"] = json.dumps(data).encode(), "application/json"
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers.update({"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + path})
        # The base is always http://127.0.0.1:<port> of the test's own server.
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)  # noqa: S310
        start = time.monotonic()
        try:
            with self.opener.open(request, timeout=60) as response:
                status, raw, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, got = error.code, error.read(), error.headers
        return Answer(status, {k.lower(): v for k, v in got.items()}, raw, time.monotonic() - start)

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def log_in(self, username: str, password: str) -> None:
        self("GET", "/login/")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": self.cookie("csrftoken")}
        answer = self("POST", "/login/", form=form)
        assert answer.status == 302, answer.body[:500]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to look at, not to follow
