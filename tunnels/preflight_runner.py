"""Connection tests, the worker side: claim pending tests and run them in threads.

A test goes through steps, each recorded as ``{"step", "ok", "detail"}``, and
stops at the first failure:

- ``resolve``: the SSH server's name resolves (where ssh would connect, per ``ssh -G``);
- ``connect``: a TCP connection to it succeeds;
- ``host_key``, ``auth``, ``forward``: a one-shot ``ssh`` built by
  ``tunnels.ssh.preflight_command`` from the tunnel's own command (same
  identity, known_hosts and options), read until the outcome is known.

-R tunnels ask the server to listen on the tunnel's remote address (port 0
while the tunnel runs and holds it); -L tunnels ask the server to open the
target with ``-W`` (the local port may belong to the running tunnel) and,
when the tunnel is not running, check the local listen address is free.
A test never starts the tunnel or changes its state. Reading ssh's output is a
pure function (``read_ssh_output``) tested over real lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from tunnels import hostkeys, netpolicy, services, ssh
from tunnels.agent import Agent, AgentError, KeyUnusable
from tunnels.models import ConnectionTest, SshKey, Status, TestState, Tunnel
from tunnels.validation import split_local

logger = logging.getLogger("tunnelsite.worker")

THREADS = 4
SSH_DEADLINE = 10.0
CONNECT_TIMEOUT = 5.0
OUTPUT_LIMIT = 65536
WORKER_GONE = "the worker running the test stopped"
SCAN_LIMIT = 500  # in-flight tests read per pass (at most one per tunnel)


# --- steps as data -----------------------------------------------------------


def passed(step: str, detail: str) -> dict[str, Any]:
    return {"step": step, "ok": True, "detail": detail}


def failed(step: str, detail: str) -> dict[str, Any]:
    return {"step": step, "ok": False, "detail": detail}


def redact(text: str) -> str:
    """A line fit for a user: no server paths (``tunnels.ssh.redact``), and short."""
    return ssh.redact(text).strip()[:300]


# --- reading ssh's output (pure) ---------------------------------------------

HOST_KEY_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed")
HOST_KEY_FAILED = re.compile(r"Host key verification failed|No \S+ host key is known for")
HOST_KEY_OK = re.compile(r"is known and matches the (?P<type>\S+) host key|Permanently added .* \((?P<added>\S+)\)")
SERVER_KEY = re.compile(r"Server host key: (?P<type>\S+) (?P<fingerprint>SHA256:\S+)")
AUTH_FAILED = re.compile(r"Permission denied \((?P<methods>[^)]*)\)|Too many authentication failures")
AUTH_OK = re.compile(r'^Authenticated to .* using "(?P<method>[^"]+)"')
REMOTE_OK = re.compile(r"remote forward success for: listen (?P<listen>\S+?),|Allocated port (?P<port>\d+)")
REMOTE_FAILED = re.compile(r"remote port forwarding failed|remote forward failure for")
STDIO_OK = re.compile(r"channel \d+: open confirm")
STDIO_FAILED = re.compile(r"open failed: (?P<why>.*)|administratively prohibited|stdio forwarding failed")
NO_HANDSHAKE = re.compile(r"banner exchange|kex_exchange_identification|Connection to \S+ port \d+ timed out")
# What ssh says when it gives up for a reason not listed above (the last such line is shown).
SSH_ERROR = re.compile(r"^(?!debug\d:)(?!Warning: Permanently).+")


@dataclass
class SshReading:
    """What the ssh output has shown so far."""

    host_key: str = ""
    auth: str = ""
    last_error: str = ""
    fingerprint: str = ""


def read_ssh_output(text: str, *, stdio: bool, forward: str, ended: str | None = None) -> list[dict[str, Any]] | None:
    """The host_key/auth/forward records once ``text`` decides them, else None.

    ``stdio``: the command used ``-W`` (open confirm/failed), else ``-R``
    (remote forward success/failure). ``forward`` names the forward in details.
    ``ended`` ("exited" or "deadline"): ssh is gone, so whatever is undecided failed.
    """
    seen = SshReading()
    for line in text.splitlines():
        records = _read_line(seen, line.strip(), stdio=stdio, forward=forward)
        if records is not None:
            return records
    if ended is None:
        return None
    last = redact(seen.last_error)
    if ended == "deadline":
        why = f"no answer within {SSH_DEADLINE:g} s" + (f" (ssh said: {last})" if last else "")
    else:
        why = f"ssh exited: {last}" if last else "ssh exited without saying why"
    if not seen.host_key and NO_HANDSHAKE.search(seen.last_error):
        why = f"no SSH handshake: the server took the connection but did not answer as an SSH server ({why})"
    return _fail_next(seen, why)


def _read_line(seen: SshReading, line: str, *, stdio: bool, forward: str) -> list[dict[str, Any]] | None:
    if match := SERVER_KEY.search(line):
        seen.fingerprint = f"{match['type']} {match['fingerprint']}"
    if HOST_KEY_CHANGED.search(line):
        known = seen.fingerprint or "an unknown key"
        detail = f"host key verification failed: the server now shows {known}, not the key remembered for it"
        return [failed("host_key", detail)]
    if HOST_KEY_FAILED.search(line):
        return [failed("host_key", f"host key verification failed — ssh said: {redact(line)}")]
    if match := AUTH_FAILED.search(line):
        methods = match["methods"] or "publickey"
        denied = f"permission denied ({methods}): the SSH server did not accept the tunnel's key"
        return [*_host_key_ok(seen), failed("auth", denied)]
    if match := HOST_KEY_OK.search(line):
        seen.host_key = _host_key_detail(seen, remembered=match["added"] is None)
    if match := AUTH_OK.search(line):
        seen.auth = f'authenticated with "{match["method"]}"'
    if SSH_ERROR.match(line):
        seen.last_error = line
    return _read_forward(seen, line, stdio=stdio, forward=forward) if seen.auth else None


def _read_forward(seen: SshReading, line: str, *, stdio: bool, forward: str) -> list[dict[str, Any]] | None:
    done = [*_host_key_ok(seen), passed("auth", seen.auth)]
    if stdio:
        if match := STDIO_FAILED.search(line):
            why = redact(match["why"] or line)
            return [*done, failed("forward", f"the SSH server could not open {forward}: {why}")]
        if STDIO_OK.search(line):
            return [*done, passed("forward", f"the SSH server opened a connection to {forward}")]
        return None
    if REMOTE_FAILED.search(line):
        refused = (
            f"remote port forwarding failed: the SSH server refused to listen on {forward} "
            "(port in use there, or forwarding not allowed)"
        )
        return [*done, failed("forward", refused)]
    if REMOTE_OK.search(line):
        return [*done, passed("forward", f"the SSH server accepted the forward and listens on {forward}")]
    return None


def _host_key_detail(seen: SshReading, *, remembered: bool) -> str:
    key = seen.fingerprint or "the server's key"
    return f"{key} matches the remembered host key" if remembered else f"first connection: remembered {key}"


def _host_key_ok(seen: SshReading) -> list[dict[str, Any]]:
    return [passed("host_key", seen.host_key or _host_key_detail(seen, remembered=True))]


def _fail_next(seen: SshReading, why: str) -> list[dict[str, Any]]:
    """Fail the first step ssh did not get past."""
    if seen.auth:
        return [*_host_key_ok(seen), passed("auth", seen.auth), failed("forward", why)]
    if seen.host_key:
        return [passed("host_key", seen.host_key), failed("auth", why)]
    return [failed("host_key", why)]


# --- the steps ---------------------------------------------------------------


@dataclass
class Server:
    host: str
    port: int
    via_proxy: bool = False
    addresses: list[tuple] = field(default_factory=list)


def where_ssh_connects(argv: list[str], env: dict[str, str]) -> Server | str:
    """Host and port after ssh applies its config (``ssh -G``); an error text if ssh refuses."""
    try:
        result = subprocess.run(
            ssh.config_query_command(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=CONNECT_TIMEOUT,
            check=False,
            text=True,
            # Its own session (and the runner's blocked group signals): a SIGTERM to the worker's process
            # group must not kill this quick local query and turn "the worker stopped" into "ssh rejected".
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run ssh: {exc.__class__.__name__}"
    if result.returncode < 0:
        return f"ssh was killed by {signal.Signals(-result.returncode).name} while reading its configuration"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if not line.startswith("debug")]
        return f"ssh rejected the tunnel's configuration: {redact(lines[-1] if lines else 'no reason given')}"
    values = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    proxied = any(values.get(key, "none") != "none" for key in ("proxycommand", "proxyjump"))
    return Server(values.get("hostname", ""), int(values.get("port", "22")), proxied)


def step_resolve(server: Server) -> dict[str, Any]:
    if server.via_proxy:
        return passed("resolve", "the tunnel connects through a proxy: ssh resolves the name there")
    try:
        server.addresses = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return failed("resolve", f"unknown host: {server.host} could not be resolved ({why})")
    shown = sorted({info[4][0] for info in server.addresses})
    return passed("resolve", f"{server.host} resolves to {', '.join(shown[:4])}")


def step_connect(server: Server) -> dict[str, Any]:
    where = f"{server.host}:{server.port}"
    if server.via_proxy:
        return passed("connect", "the tunnel connects through a proxy: ssh connects there")
    problem = "no address to connect to"
    for family, kind, proto, _, address in server.addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(address)
            except ConnectionRefusedError:
                problem = f"connection refused: nothing accepts SSH connections at {where}"
            except TimeoutError:
                problem = f"connection timed out: {where} did not answer within {CONNECT_TIMEOUT:g} s"
            except OSError as exc:
                problem = f"could not connect to {where}: {exc.strerror or exc}"
            else:
                return passed("connect", f"TCP connection to {where} succeeded")
    return failed("connect", problem)


def tunnel_is_active(tunnel: Tunnel) -> bool:
    return tunnel.pid is not None or tunnel.status in (Status.RUNNING, Status.STARTING)


def forward_label(tunnel: Tunnel, *, stdio: bool, spare: bool) -> str:
    if stdio:
        return ssh.remote_end(tunnel)
    return f"{tunnel.listen} (a spare port: the running tunnel holds its own)" if spare else tunnel.listen


def _bounded(argv: list[str], deadline: float) -> list[str]:
    """``timeout`` kills ssh even if the worker itself is killed before it could."""
    timeout = shutil.which("timeout")
    return [timeout, "-s", "KILL", f"{deadline + 5:g}", *argv] if timeout else argv


def run_ssh(
    argv: list[str], env: dict[str, str], decide, deadline: float = SSH_DEADLINE, *, started=None
) -> list[dict[str, Any]]:
    """Run a one-shot ssh (own process group, stdin /dev/null) until ``decide(text, ended)`` answers;
    the group is killed as soon as it has, or at the deadline. ``started(proc)`` lets the runner
    kill it when the worker shuts down."""
    proc = subprocess.Popen(
        _bounded(argv, deadline),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=str(settings.DATA_DIR),
        start_new_session=True,
        close_fds=True,
    )
    try:
        if started is not None:
            started(proc)
        return _read_until_decided(proc, decide, time.monotonic() + deadline)
    finally:
        # The group, not just ssh: a ProxyCommand of a staff config dies with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
        # The worker's orphan reaping may collect ssh first; then wait() returns at once.
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            proc.wait(timeout=5)


def _read_until_decided(proc: subprocess.Popen, decide, deadline: float) -> list[dict[str, Any]]:
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=min(left, 0.5)):
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            data = (data + chunk)[-OUTPUT_LIMIT:]
            records = decide(data.decode("utf-8", "replace"), None if chunk else "exited")
            if records is not None:
                return records
    return decide(data.decode("utf-8", "replace"), "deadline")


def step_local_listen(tunnel: Tunnel) -> dict[str, Any] | None:
    """An -L tunnel that is not running: can its local address be bound here? (bind and close)"""
    host, port = split_local(tunnel.local_port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ssh does: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                return failed("forward", f"address already in use: another program listens on {tunnel.listen}")
            return failed("forward", f"cannot listen on {tunnel.listen}: {exc.strerror or exc}")
    return None


def ssh_steps(tunnel: Tunnel, plan: Plan, started=None) -> list[dict]:
    label = forward_label(tunnel, stdio=plan.stdio, spare=plan.spare)

    def decide(text: str, ended: str | None) -> list[dict[str, Any]] | None:
        return read_ssh_output(text, stdio=plan.stdio, forward=label, ended=ended)

    records = run_ssh(plan.command.argv, plan.command.env, decide, started=started)
    if records[-1]["ok"] and plan.stdio and not tunnel_is_active(tunnel):
        local = step_local_listen(tunnel)
        if local is not None:
            records[-1] = local
        else:
            records[-1]["detail"] += f"; {tunnel.listen} is free to listen on"
    return records


@dataclass
class Plan:
    """A test prepared in the worker's main thread (where the agent is used): the command, or why
    there is none (``auth_error``: no usable key; ``error``: the command could not be built)."""

    stdio: bool
    spare: bool
    command: ssh.Command | None = None
    auth_error: str = ""
    error: str = ""
    key: SshKey | None = None
    address: str | None = None  # the checked destination address ssh is pinned to (non-staff)


def plan_test(tunnel: Tunnel, agent: Agent | None) -> Plan:
    """Build the test's ssh command (loads the tunnel's key into ``agent``, as starting it would)."""
    stdio = tunnel.is_forward_local
    plan = Plan(stdio=stdio, spare=not stdio and tunnel_is_active(tunnel))
    try:
        hostkeys.sync_owner(tunnel.owner_id)  # the owner's known_hosts as the database trusts them, as at start
    except OSError as exc:
        plan.error = f"the owner's known hosts could not be written: {redact(str(exc))}"
        return plan
    try:
        # The network policy first: a refused destination is never connected to, so a test cannot
        # tell an open port from a closed one there (tunnels.netpolicy).
        problem = netpolicy.row_problem(tunnel)
        if problem:
            raise netpolicy.DestinationRefused(problem)
        plan.address = netpolicy.resolve_destination(tunnel)
    except netpolicy.DestinationRefused as exc:
        plan.error = str(exc)
        return plan
    try:
        plan.command = ssh.preflight_command(
            tunnel, agent=agent, stdio=plan.stdio, spare_remote_port=plan.spare, address=plan.address
        )
    except (ssh.NoKey, KeyUnusable, AgentError) as exc:
        plan.auth_error = redact(str(exc))
    except (ValueError, OSError) as exc:
        plan.error = f"the tunnel's ssh command could not be built: {redact(str(exc))}"
    plan.key = tunnel.ssh_key if tunnel.ssh_key_id else None
    return plan


def naive_server(tunnel: Tunnel, address: str | None = None) -> Server:
    """Where ssh connects without a config (non-staff tunnels have an empty one): the checked address."""
    return Server(address or tunnel.remote_host.rsplit("@", 1)[-1], int(tunnel.ssh_port or 22))


def run_steps(tunnel: Tunnel, plan: Plan, started=None) -> list[dict[str, Any]]:
    """Every step in order, up to and including the first failure."""
    if plan.error:
        return [failed("resolve", plan.error)]
    if plan.command:
        server = where_ssh_connects(plan.command.argv, plan.command.env)
    else:
        server = naive_server(tunnel, plan.address)
    if isinstance(server, str):
        return [failed("resolve", server)]
    records = []
    for step in (step_resolve, step_connect):
        records.append(step(server))
        if not records[-1]["ok"]:
            return records
    if plan.auth_error:
        return [*records, failed("auth", plan.auth_error)]
    return records + ssh_steps(tunnel, plan, started=started)


# --- claiming and recording ---------------------------------------------------


def finish(test_id, records: list[dict[str, Any]], *, only_if_node: str | None = None) -> bool:
    """Write the result once (a test already done is left alone)."""
    last = records[-1]
    ok = all(record["ok"] for record in records)
    rows = ConnectionTest.objects.filter(pk=test_id, state=TestState.RUNNING)
    if only_if_node is not None:
        rows = rows.filter(node=only_if_node)
    values = dict(state=TestState.DONE, ok=ok, step=last["step"], detail=last["detail"], steps=records)
    return rows.update(**values, finished_at=timezone.now()) == 1


# A shutdown is a SIGTERM to the worker's process group. A child spawned at that moment is still in
# the group until it calls setsid(), and Python's vfork path resets its handlers to the default before
# then, so it would die of the signal and the test would read "ssh rejected the configuration". The
# test threads block these signals (Python runs handlers in the main thread, which still takes them);
# their children inherit the mask, and the runner ends them with SIGKILL, which no mask holds back.
GROUP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _deaf_to_group_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)


class PreflightRunner:
    """Owned by a reconciler: each full pass claims pending tests and runs them in a small thread pool,
    so the reconcile loop never waits for ssh."""

    def __init__(self, node: str, *, agent: Agent | None = None, threads: int = THREADS) -> None:
        self.node = node
        self.agent = agent
        self.threads = threads
        self._keys: dict[Any, SshKey] = {}  # test id -> key, while the test runs
        self._ended_owners: set[int] = set()  # their known_hosts may hold a key ssh trusted on first use
        self._pool: ThreadPoolExecutor | None = None
        self._running: set = set()
        self._procs: dict[Any, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self.backlog = False  # tests were left pending for lack of a free thread
        self._stopping = False

    @property
    def wants_pass(self) -> bool:
        """A thread came free while tests waited, or a test ended: worth a pass before the next resync."""
        with self._lock:
            return bool(self._ended_owners) or (self.backlog and len(self._running) < self.threads)

    def poll(self) -> None:
        """One pass (one query when nothing is stuck): fail tests whose worker died, claim and start
        pending ones."""
        self._harvest_host_keys()
        rows = list(
            ConnectionTest.objects.filter(state__in=(TestState.PENDING, TestState.RUNNING))
            .order_by("created_at")
            .values_list("pk", "state", "node", "started_at")[:SCAN_LIMIT]
        )
        self.fail_orphaned([(pk, node, started) for pk, state, node, started in rows if state == TestState.RUNNING])
        with self._lock:
            free = max(self.threads - len(self._running), 0)
        pending = [pk for pk, state, _, _ in rows if state == TestState.PENDING]
        self.backlog = len(pending) > free
        for test_id in pending[:free]:
            if self.claim(test_id):
                self._start(test_id)

    def _harvest_host_keys(self) -> None:
        """Keep the keys tests trusted on first use (tunnels.hostkeys), here in the main thread."""
        with self._lock:
            owners, self._ended_owners = self._ended_owners, set()
        for owner_id in owners:
            try:
                hostkeys.sync_owner(owner_id)
            except Exception:  # the next start or test of the owner's tunnels harvests again
                logger.exception("connection tests: could not keep the host keys of owner %s", owner_id)

    def keys_in_use(self) -> dict[Any, SshKey]:
        """Keys of the tests running now (the agent's resync must keep them)."""
        with self._lock:
            return {key.pk: key for key in self._keys.values()}

    def claim(self, test_id) -> bool:
        """Compare-and-swap pending → running; False when another node got it first."""
        claimed = ConnectionTest.objects.filter(pk=test_id, state=TestState.PENDING).update(
            state=TestState.RUNNING, node=self.node, started_at=timezone.now()
        )
        return claimed == 1

    def fail_orphaned(self, running: list[tuple]) -> None:
        """Tests left running by a node whose heartbeat stopped (or by an earlier life of this node).

        ``running``: (id, node, started_at) of running tests. A test younger than the lease is left
        alone, so the live-node query only runs when something may be stuck.
        """
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
        with self._lock:
            mine = set(self._running)
        suspects = [(pk, node) for pk, node, started in running if started and started < cutoff and pk not in mine]
        if not suspects:
            return
        live = set(services.live_workers().values_list("name", flat=True)) - {self.node}
        for test_id, node in suspects:
            if node not in live and finish(test_id, [failed("worker", WORKER_GONE)], only_if_node=node):
                logger.info("connection test %s: %s (%s)", test_id, WORKER_GONE, node or "no node")

    def _start(self, test_id) -> None:
        """Prepare here (the agent is not shared between threads), run in a thread."""
        try:
            tunnel = ConnectionTest.objects.select_related("tunnel__owner", "tunnel__ssh_key").get(pk=test_id).tunnel
            plan = plan_test(tunnel, self.agent)
        except Exception as exc:
            logger.exception("connection test %s: could not prepare", test_id)
            finish(test_id, [failed("worker", f"worker error: {exc.__class__.__name__}")], only_if_node=self.node)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="preflight", initializer=_deaf_to_group_signals
            )
        with self._lock:
            self._running.add(test_id)
            if plan.key is not None:
                self._keys[test_id] = plan.key
        self._pool.submit(self._run, test_id, tunnel, plan)

    def _run(self, test_id, tunnel: Tunnel, plan: Plan) -> None:
        try:
            records = run_steps(tunnel, plan, started=lambda proc: self._track(test_id, proc))
            if self._stopping:  # ssh was killed by shutdown(): say so, not "ssh exited"
                records = [failed("worker", WORKER_GONE)]
            finish(test_id, records, only_if_node=self.node)
            logger.info("connection test %s of tunnel %s: %s", test_id, tunnel.uuid, records[-1])
        except Exception as exc:  # a broken test must not kill the thread pool
            logger.exception("connection test %s: unexpected error", test_id)
            with contextlib.suppress(Exception):
                finish(test_id, [failed("worker", f"worker error: {exc.__class__.__name__}")], only_if_node=self.node)
        finally:
            with self._lock:
                self._running.discard(test_id)
                self._procs.pop(test_id, None)
                self._keys.pop(test_id, None)
                self._ended_owners.add(tunnel.owner_id)
            connection.close()  # this thread's own connection: nothing else would close it

    def _track(self, test_id, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs[test_id] = proc
            stopping = self._stopping
        if stopping:
            # Spawned after shutdown() killed the others (SIGTERM came while this test was being prepared):
            # it must not keep the worker's exit waiting for ssh's own timeouts.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def shutdown(self, *, wait: bool = False) -> None:
        """Stop: running tests' ssh are killed (they record "ssh exited") unless ``wait``; pending
        tests stay for another worker."""
        if self._pool is None:
            return
        if not wait:
            with self._lock:
                self._stopping = True
                procs = list(self._procs.values())
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
