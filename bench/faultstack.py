"""The running tunnelsite that bench/faults.py injects faults into, and the probe that watches it.

``running_stack`` starts what ``bin/run`` starts (gunicorn 2 workers x 4 threads and
``manage.py tunnel_worker`` with default settings) on a throw-away data dir, a real
sshd on loopback (tests/sshd.py), a small HTTP target, one ordinary user with an SSH
key and a token, and 5 ``-L`` + 5 ``-R`` tunnels through the sshd. ``Probe`` fetches
through every tunnel every 0.25 s and polls the API's view of the tunnels as often,
so a row can say afterwards when traffic stopped and came back and what the API said
meanwhile. Everything started here is stopped by PID / process group in ``finally``.
"""

from __future__ import annotations

import bisect
import http.client
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import HOST, PY, ROOT, bench_env, gunicorn_command, stop, wait_listening  # noqa: E402

PORT_BLOCK = (46000, 46999)  # this bench's ports: web, sshd, targets, tunnels, PostgreSQL
TICK = 0.25  # the probe interval


class Ports:
    """Ports of PORT_BLOCK free on 127.0.0.1, each handed out once per run (from a random start, so
    two runs side by side, e.g. the smoke test next to a full run, rarely meet).

    The block lies inside Linux's ephemeral range (32768-60999): an outgoing connection (the probe's,
    ssh's) could take a port picked here before its server binds it, or while the sshd is down. So
    each port handed out stays bound here (SO_REUSEADDR, never listening) until ``release``: the kernel
    then never picks it for a connection, and the server that binds it with SO_REUSEADDR (sshd, ssh's
    -L listener, gunicorn, PostgreSQL, the targets) still can.
    """

    def __init__(self) -> None:
        low, high = PORT_BLOCK
        start = random.randint(low, high)
        self._order = iter([*range(start, high + 1), *range(low, start)])
        self._held: list[socket.socket] = []

    def take(self) -> int:
        for port in self._order:
            sock = socket.socket()
            try:
                sock.bind((HOST, port))  # no SO_REUSEADDR yet: fails if anything has the port
            except OSError:
                sock.close()
                continue
            sock.close()
            held = socket.socket()
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                held.bind((HOST, port))
            except OSError:  # taken in between
                held.close()
                continue
            self._held.append(held)
            return port
        raise RuntimeError(f"no free port left in {PORT_BLOCK}")

    def release(self) -> None:
        """Let go of every port handed out so far (after a row's stack has stopped)."""
        for sock in self._held:
            sock.close()
        self._held.clear()


# --- a target behind the tunnels -------------------------------------------


class _Hello(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            self.request.recv(4096)
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        except OSError:
            pass


class Target(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_target(port: int) -> Target:
    server = Target((HOST, port), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def carries(port: int, timeout: float = 1.0) -> bool:
    """True when an HTTP GET through ``port`` reaches the target (within 1 s: on a loaded 2-core machine a
    tighter limit counts a slow fetch through a healthy tunnel as an outage)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.endswith(b"hello")


# --- HTTP client --------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no answer (connection error or timeout)
    content_type: str
    body: object  # parsed JSON, or the text
    seconds: float

    @property
    def kind(self) -> str:
        """``503 json`` / ``500 html``: what a client gets, in a word."""
        kind = "json" if "json" in self.content_type else ("html" if "html" in self.content_type else "other")
        return f"{self.status} {kind}" if self.status else "no answer"

    def get(self, key: str, default: object = None) -> object:
        return self.body.get(key, default) if isinstance(self.body, dict) else default


def request(port: int, method: str, path: str, token: str, body: object = None, timeout: float = 60) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    began = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        status, ctype = response.status, response.getheader("Content-Type") or ""
    except OSError as exc:
        return Answer(0, "", str(exc), time.monotonic() - began)
    finally:
        conn.close()
    try:
        parsed: object = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")[:200]
    return Answer(status, ctype, parsed, time.monotonic() - began)


def health(port: int) -> str:
    """``GET /api/v1/status`` (as a load balancer asks: no credentials) in a line: kind, ok, error, problems."""
    answer = request(port, "GET", "/api/v1/status", "", timeout=60)
    problems = [item.get("error") for item in answer.get("problems") or [] if isinstance(item, dict)]
    said = f"{answer.kind} ok={answer.get('ok')}"
    if answer.get("error"):
        said += f" error={answer.get('error')!r}"
    return said + (f" problems={problems}" if problems else "")


# --- the probe ----------------------------------------------------------------


@dataclass
class Tunnel:
    id: str
    hash: str
    direction: str  # "-L" / "-R"
    entry: int  # where traffic goes in: the -L local port, or the -R port on the sshd's loopback
    samples: list[tuple[float, bool]] = field(default_factory=list)


class Probe:
    """Fetch through every tunnel every TICK (one thread per tunnel) and poll ``GET /api/v1/tunnels/``
    as often; keeps (monotonic time, result) samples for the rows to read."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.tunnels: dict[str, Tunnel] = {}
        self.api: list[tuple[float, dict[str, dict]]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._poll_api)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def add(self, tunnel: Tunnel) -> None:
        self.tunnels[tunnel.id] = tunnel
        self._spawn(self._fetch_loop, tunnel)

    def _fetch_loop(self, tunnel: Tunnel) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            tunnel.samples.append((began, carries(tunnel.entry)))
            self._stop.wait(max(0.0, TICK - (time.monotonic() - began)))

    def _poll_api(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            answer = request(self.port, "GET", "/api/v1/tunnels/?limit=1000", self.token, timeout=10)
            entries = answer.get("entries")
            if isinstance(entries, list):
                self.api.append((began, {item["id"]: item for item in entries}))
            self._stop.wait(max(0.0, TICK - (time.monotonic() - began)))

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- reading the samples --

    def api_at(self, moment: float) -> dict[str, dict]:
        """The API's tunnels as last seen at or before ``moment``."""
        index = bisect.bisect_right(self.api, moment, key=lambda item: item[0])
        return self.api[index - 1][1] if index else {}

    def ok_since(self, tunnel_id: str, since: float) -> float | None:
        """When traffic first went through again at or after ``since``."""
        for moment, ok in list(self.tunnels[tunnel_id].samples):
            if moment >= since and ok:
                return moment
        return None

    def steady_since(self, tunnel_id: str, since: float) -> float | None:
        """The first good sample after the last failed one since ``since`` (None: failing at the end)."""
        samples = [(moment, ok) for moment, ok in list(self.tunnels[tunnel_id].samples) if moment >= since]
        failed = [index for index, (_, ok) in enumerate(samples) if not ok]
        rest = samples[failed[-1] + 1 :] if failed else samples
        return rest[0][0] if rest else None

    def failed_spans(self, tunnel_id: str, start: float, end: float) -> list[tuple[float, float]]:
        """(moment, seconds) of each failed sample in [start, end]: until the next sample, since a fetch
        that times out makes the gap longer than TICK."""
        samples = list(self.tunnels[tunnel_id].samples)
        spans = []
        for index, (moment, ok) in enumerate(samples):
            if start <= moment <= end and not ok:
                following = samples[index + 1][0] if index + 1 < len(samples) else moment + TICK
                spans.append((moment, min(following, end) - moment if following > moment else TICK))
        return spans

    def down_between(self, tunnel_id: str, start: float, end: float) -> float:
        """Seconds without traffic in [start, end]."""
        return sum(seconds for _, seconds in self.failed_spans(tunnel_id, start, end))

    def running_without_traffic(self, tunnel_id: str, start: float, end: float) -> float:
        """Seconds in [start, end] when the API said ``running`` while nothing went through."""
        return sum(
            seconds
            for moment, seconds in self.failed_spans(tunnel_id, start, end)
            if self.api_at(moment).get(tunnel_id, {}).get("status") == "running"
        )

    def pids_after(self, tunnel_id: str, since: float) -> list[tuple[float, int]]:
        """(moment, pid) each time the API showed a new autossh pid for the tunnel after ``since``."""
        seen: list[tuple[float, int]] = []
        last = self.api_at(since).get(tunnel_id, {}).get("pid")
        for moment, items in list(self.api):
            pid = items.get(tunnel_id, {}).get("pid")
            if moment > since and pid and pid != last:
                seen.append((moment, pid))
            if pid:
                last = pid
        return seen

    def wait_all_ok(self, since: float, timeout: float, ids: list[str] | None = None) -> float | None:
        """Wait until every tunnel (or ``ids``) carried traffic after ``since``; the moment the last one did."""
        deadline = time.monotonic() + timeout
        ids = ids or list(self.tunnels)
        while time.monotonic() < deadline:
            moments = [self.ok_since(tid, since) for tid in ids]
            if all(moments):
                return max(moments)
            time.sleep(TICK)
        return None


# --- the stack ----------------------------------------------------------------


@dataclass
class Stack:
    root: Path
    data: Path
    env: dict[str, str]
    ports: Ports
    sshd: object  # tests.sshd.SshServer
    web: int = 0
    token: str = ""
    target_port: int = 0
    gunicorn: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    probe: Probe | None = None
    names: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))

    @property
    def worker_log(self) -> Path:
        return self.root / "worker.log"

    def call(self, method: str, path: str, body: object = None, timeout: float = 60) -> Answer:
        return request(self.web, method, path, self.token, body, timeout)

    def tunnel_body(self, direction: str, remote_port: int | None = None, **extra) -> dict:
        """A create body through the sshd: -L listens on a port of the block and reaches the target
        from the server; -R listens on the server's loopback and reaches the target here."""
        listen = self.ports.take()
        body = {
            "name": f"f{next(self.names)}",
            "remote_host": self.sshd.destination,
            "ssh_port": self.sshd.port,
            "ssh_key": self.env["FAULTS_KEY_ID"],
        }
        if direction == "-L":
            body.update(
                direction="remote_to_local", local_port=str(listen), remote_port=str(remote_port or self.target_port)
            )
        else:
            body.update(direction="local_to_remote", local_port=str(self.target_port), remote_port=str(listen))
        body.update(extra)
        return body

    def create(self, direction: str, probe: bool = True, **extra) -> Tunnel:
        body = self.tunnel_body(direction, **extra)
        answer = self.call("POST", "/api/v1/tunnels/", body)
        if answer.status != 201:
            raise RuntimeError(f"creating a tunnel failed: {answer.status} {answer.body}")
        entry = int(body["local_port"] if direction == "-L" else body["remote_port"])
        tunnel = Tunnel(answer.body["id"], answer.body["hash"], direction, entry)
        if probe and self.probe:
            self.probe.add(tunnel)
        return tunnel

    def action(self, tunnel_id: str, verb: str, wait: float = 0, timeout: float = 60) -> Answer:
        return self.call("POST", f"/api/v1/tunnels/{tunnel_id}/{verb}/?wait={wait:g}", timeout=timeout)

    def tunnels(self) -> dict[str, dict]:
        answer = self.call("GET", "/api/v1/tunnels/?limit=1000")
        return {item["id"]: item for item in answer.get("entries") or []}

    def history(self, tunnel_id: str | None = None) -> list[dict]:
        query = f"&tunnel={tunnel_id}" if tunnel_id else ""
        return list(self.call("GET", f"/api/v1/history/?limit=1000{query}").get("entries") or [])

    def start_worker(self) -> subprocess.Popen:
        with open(self.worker_log, "ab") as log:
            self.worker = subprocess.Popen(
                [PY, "manage.py", "tunnel_worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(self.worker)
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the worker process alone (a crash): its tunnels run on in their own sessions."""
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=10)

    def crash(self, tunnel_id: str) -> int:
        """SIGKILL a tunnel's whole process group (autossh and its ssh: the tunnel is down at once);
        returns the autossh pid."""
        pid = self.probe.api_at(time.monotonic())[tunnel_id]["pid"]
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        return pid

    def ssh_floor(self, tries: int = 3) -> float:
        """Fastest of ``tries`` plain ssh logins to the sshd (connect, authenticate, run nothing): the least a
        reconnect can take on this machine."""
        options = ["BatchMode=yes", "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]
        argv = ["ssh", "-F", "none", "-T", "-i", str(self.sshd.client_key), "-p", str(self.sshd.port)]
        for option in options:
            argv += ["-o", option]
        argv += [self.sshd.destination, "true"]
        best = float("inf")
        for _ in range(tries):
            began = time.monotonic()
            subprocess.run(argv, capture_output=True, timeout=30, check=True)
            best = min(best, time.monotonic() - began)
        return best

    def sshd_down(self) -> None:
        from tests.sshd import stop_sshd

        stop_sshd(self.sshd)

    def sshd_up(self) -> None:
        """The same server again: same port, config and host key."""
        from tests.procs import port_open, spawn, wait_for
        from tests.sshd import SSHD

        workdir = self.sshd.log.parent
        self.sshd.proc = spawn(
            [SSHD, "-D", "-f", str(workdir / "sshd_config"), "-E", str(self.sshd.log)], workdir / "sshd.out"
        )
        wait_for(lambda: port_open(self.sshd.port), timeout=10, message="sshd back")


def stack_env(data: Path, ports: Ports, database_url: str | None) -> dict[str, str]:
    env = bench_env(str(data), database_url=database_url)
    env.update(
        {
            "LOG_LEVEL": "INFO",  # the default: the worker's log lines are a figure of the database row
            "PYTHONUNBUFFERED": "1",
            "SECRET_KEY": "faults-bench-secret-key-not-for-production-0123456789",
            "TUNNELSITE_NODE": f"faults-{os.getpid()}",
            # As tests/conftest.py does: the sshd and the targets are on loopback, which the policy denies.
            "TUNNELSITE_SSH_DESTINATIONS_ALLOW": "127.0.0.0/8",
            "TUNNELSITE_ALLOWED_TARGETS": "127.0.0.0/8:1024-65535",
            "TUNNELSITE_PORT_RANGE": f"{PORT_BLOCK[0]}-{PORT_BLOCK[1]}",
        }
    )
    return env


SETUP = """
import json
from django.contrib.auth import get_user_model
from accounts import tokens
from tunnels import sshkeys
user = get_user_model().objects.create_user("faults", password="faults-pass-123")
key = sshkeys.build(user, "faults", sshkeys.new_private_key(), sshkeys.default_comment(user, "faults"))
key.save()
_, raw = tokens.mint(user, label="faults")
print(json.dumps({"token": raw, "key": str(key.id), "public": key.public_key}))
"""


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def prepare_database(env: dict[str, str], template: Path | None) -> None:
    """Migrate (or copy the migrated SQLite template), then add the user, its key and token."""
    data = Path(env["TUNNELSITE_DATA_DIR"])
    if template and "DATABASE_URL" not in env:
        shutil.copy(template, data / "tunnelsite.sqlite3")
    else:
        manage(env, "migrate", "--noinput", "-v", "0")
    made = json.loads(manage(env, "shell", "-c", SETUP).strip().splitlines()[-1])
    env["FAULTS_TOKEN"], env["FAULTS_KEY_ID"], env["FAULTS_PUBLIC"] = made["token"], made["key"], made["public"]


def sqlite_template(root: Path) -> Path:
    """One migrated SQLite database copied into every row's data dir (migrating costs seconds)."""
    data = root / "template"
    data.mkdir(parents=True, exist_ok=True)
    env = stack_env(data, Ports(), None)
    manage(env, "migrate", "--noinput", "-v", "0")
    import sqlite3

    path = data / "tunnelsite.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")  # a single file to copy
    return path


def start_sshd_on(workdir: Path, port: int):
    """tests/sshd.py's server, on a port of this bench's block."""
    from tests import sshd as sshd_mod

    original = sshd_mod.free_port
    sshd_mod.free_port = lambda: port  # start_sshd picks its port through this name
    try:
        return sshd_mod.start_sshd(workdir)
    finally:
        sshd_mod.free_port = original


@contextmanager
def running_stack(
    root: Path,
    ports: Ports,
    template: Path | None,
    database_url: str | None = None,
    data: Path | None = None,
    tunnels: int = 5,
) -> Iterator[Stack]:
    """The whole of tunnelsite as ``bin/run`` runs it, with ``tunnels`` -L and as many -R tunnels
    carrying traffic and watched by a Probe; stopped (every process, by PID) however the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    data = data or root / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = stack_env(data, ports, database_url)
    sshd = start_sshd_on(root / "sshd", ports.take())
    stack = Stack(root, data, env, ports, sshd)
    target = None
    try:
        prepare_database(env, template)
        sshd.authorize(env["FAULTS_PUBLIC"])
        stack.token = env["FAULTS_TOKEN"]
        stack.target_port = ports.take()
        target = start_target(stack.target_port)
        manage(env, "collectstatic", "--noinput", "-v", "0")
        start_web(stack)
        stack.start_worker()
        stack.probe = Probe(stack.web, stack.token)
        began = time.monotonic()
        for direction in ("-L", "-R"):
            for _ in range(tunnels):
                stack.create(direction)
        if stack.probe.wait_all_ok(began, timeout=90) is None:
            states = {t["name"]: (t["status"], t["last_error"][:120]) for t in stack.tunnels().values()}
            raise RuntimeError(f"the tunnels did not all carry traffic within 90 s: {states}")
        yield stack
    finally:
        teardown(stack, target)


def start_web(stack: Stack) -> None:
    stack.web = stack.ports.take()
    with open(stack.root / "gunicorn.log", "ab") as log:
        # bin/run's web: 2 workers x 4 threads (WEB_CONCURRENCY's default), gthread.
        stack.gunicorn = subprocess.Popen(
            gunicorn_command(stack.web, 2, 4), cwd=ROOT, env=stack.env, stderr=log, start_new_session=True
        )
    wait_listening(stack.web, stack.gunicorn, ("GET", "/api/v1/status"), timeout=60)


def teardown(stack: Stack, target: Target | None) -> None:
    from tests.procs import kill_group
    from tests.sshd import stop_sshd
    from tunnels import processes
    from tunnels.agent import kill_agents

    if stack.probe:
        stack.probe.close()
    if stack.gunicorn:
        stop(stack.gunicorn)
    for worker in stack.workers:
        kill_group(worker, grace=10)
    for found in processes.Scanner(stack.data).scan().values():
        for item in found:
            processes.stop_group(item.pgid, [(item.pid, item.create_time), *((pid, None) for pid in item.ssh_pids)])
    kill_agents(stack.data)
    processes.reap_zombie_tunnels()
    stop_sshd(stack.sshd)
    if target:
        target.shutdown()
        target.server_close()
