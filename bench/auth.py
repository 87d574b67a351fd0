"""Cost of authentication through gunicorn on loopback.

Starts its own gunicorn (temp data dir, SQLite, migrated, one user with a token
and a session), drives it with a small keep-alive load generator (threads <
cores), prints requests/s and p50/p99 for:

* token   GET /api/v1/users/me/ with ``Authorization: Bearer tsk_…``
* session GET /api/v1/users/me/ with a session cookie
* anon    GET /api/v1/users/me/ without credentials (401: same URL and middleware, no auth lookup)
* status  GET /api/v1/status (no auth; falls back to OPTIONS /api/v1/authentication/auth/ if absent)

and, in-process, the time of one ``ApiTokenAuthentication.authenticate`` call.
Every recorded request also pays the request-history INSERT, in every mode.

Usage: .venv/bin/python bench/auth.py [--seconds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile

from harness import HOST, UNTHROTTLED, arguments, bench_env, drive, fixed, gunicorn, manage

SETUP = """
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from accounts import tokens
user = get_user_model().objects.create_user("bench", password="bench-pass-123456")
_, raw = tokens.mint(user, label="bench")
session = SessionStore()
session["_auth_user_id"] = str(user.pk)
session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
print(raw)
print(session.session_key)
"""

IN_PROCESS = """
import time
from django.test import RequestFactory
from rest_framework.request import Request
from accounts.authentication import ApiTokenAuthentication
raw = {raw!r}
auth = ApiTokenAuthentication()
factory = RequestFactory()
requests = [Request(factory.get("/api/v1/users/me/", HTTP_AUTHORIZATION="Bearer " + raw)) for _ in range(2000)]
auth.authenticate(requests[0])
started = time.perf_counter()
for request in requests:
    auth.authenticate(request)
print((time.perf_counter() - started) / len(requests) * 1e6)
from accounts.middleware import row_for
from accounts.models import ApiRequest
from django.http import HttpResponse
row = row_for(requests[0]._request, 200, 1.0)
started = time.perf_counter()
for _ in range(500):
    ApiRequest.objects.create(**row)
print((time.perf_counter() - started) / 500 * 1e6)
"""


def main() -> None:
    args = arguments(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as data:
        env = bench_env(data, {"TUNNELSITE_THROTTLE_ANON": UNTHROTTLED})  # anon-401 and no-auth are anonymous
        manage(env, "migrate", "--noinput")
        raw, session_key = manage(env, "shell", "-c", SETUP).split()[-2:]
        auth_us, insert_us = map(float, manage(env, "shell", "-c", IN_PROCESS.format(raw=raw)).split()[-2:])
        with gunicorn(env, data, probe=("GET", "/api/v1/")) as port:
            run_modes(port, raw, session_key, args, auth_us)
            print(f"request-history INSERT in-process (SQLite, autocommit): {insert_us:.0f} us per row")


def run_modes(port: int, raw: str, session_key: str, args: argparse.Namespace, auth_us: float) -> None:
    me = "/api/v1/users/me/"
    probe = http.client.HTTPConnection(HOST, port, timeout=5)
    probe.request("GET", "/api/v1/status")
    has_status = probe.getresponse().status == 200
    probe.close()
    status_mode = ("GET", "/api/v1/status") if has_status else ("OPTIONS", "/api/v1/authentication/auth/")
    modes = {
        "token": ("GET", me, {"Authorization": f"Bearer {raw}"}),
        "session": ("GET", me, {"Cookie": f"sessionid={session_key}"}),
        "anon-401": ("GET", me, {}),
        "no-auth": (*status_mode, {}),
    }
    drive(port, fixed("GET", me, {"Authorization": f"Bearer {raw}"}), 1.0, args.threads)  # warm-up
    results = {name: drive(port, fixed(*mode), args.seconds, args.threads) for name, mode in modes.items()}
    print(f"gunicorn gthread 1 worker x 4 threads, SQLite, {args.threads} client thread(s), {args.seconds:.0f} s each")
    for name, (method, path, _) in modes.items():
        r = results[name]
        print(
            f"{name:9} {method:7} {path:32} {r.rps:8.0f} req/s  p50 {r.p50:6.2f} ms"
            f"  p99 {r.p99:6.2f} ms  {json.dumps(r.statuses)}"
        )
    print(f"token auth in-process (ApiTokenAuthentication.authenticate): {auth_us:.0f} us per call")
    print(f"token vs session p50 on /users/me/: {results['token'].p50 - results['session'].p50:+.2f} ms")
    print(f"token /users/me/ vs no-auth endpoint p50: {results['token'].p50 - results['no-auth'].p50:+.2f} ms")


if __name__ == "__main__":
    main()
