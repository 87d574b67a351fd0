"""The reconciler: make the running autossh processes match the desired state.

``Reconciler(node).reconcile_once()`` is one pass. It is cheap when nothing
changed (a heartbeat, one read of the change marker, a liveness check of the
processes it knows); a full pass (one psutil scan, one query for the tunnels
this node runs or may claim) happens when the marker moved, a process died, a
tunnel is starting or due for a retry, or the resync interval elapsed.

Only this module (through ``tunnels.processes``) starts or stops processes.
Observed state is written with ``filter(pk=..., node=me).update(...)``: a
row count of 0 means another node took the tunnel, and our copy is stopped.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import time
import uuid as uuid_mod
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from tunnels import hostkeys, logfiles, netpolicy, processes, retries, services
from tunnels.agent import Agent, AgentError, KeyUnusable
from tunnels.models import Desired, ExitReason, SshKey, Status, Tunnel, TunnelSession, WorkerNode
from tunnels.preflight_runner import PreflightRunner
from tunnels.ssh import NO_KEY_ERROR, NoKey, autossh_gate_seconds, command_for, redact
from tunnels.validation import split_local

logger = logging.getLogger("tunnelsite.worker")

# After "Authenticated to", a refused -R forward is reported within one round
# trip; a forward that has not failed after this long is taken as up.
REMOTE_SETTLE = 0.5
INTERACTIVE_ERROR = (
    "interactive tunnels need a person to answer ssh's prompts; the worker never starts them "
    "(start it from a terminal, or set interactive to false and use key authentication)"
)
# SshKey.last_used_at is written at most this often per key.
KEY_TOUCH_SECONDS = 60.0

# Lines ssh writes when a tunnel cannot work, and what they mean for the user.
# The last field says whether only the user can fix it (status failed rather than backoff).
FAILURES: list[tuple[re.Pattern[str], str, bool]] = [
    (re.compile(r"address already in use", re.I), "address already in use: another program listens on {listen}", True),
    (re.compile(r"cannot listen to port"), "address already in use: ssh could not listen on {listen}", True),
    (
        re.compile(r"bind .*Permission denied"),
        "permission denied: not allowed to listen on {listen} (ports below 1024 need privileges)",
        True,
    ),
    (
        re.compile(r"Permission denied \((?P<methods>[^)]*)\)"),
        "permission denied ({methods}): the SSH server did not accept the tunnel's key",
        True,
    ),
    (
        re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "host key verification failed: the server's host key differs from the one remembered for it",
        True,
    ),
    (
        re.compile(r"remote port forwarding failed"),
        "remote port forwarding failed: the SSH server refused to listen on {listen} "
        "(port in use there, or forwarding not allowed)",
        True,
    ),
    (
        re.compile(r"ssh: connect to host .*Connection refused"),
        "connection refused: nothing accepts SSH connections at {server}",
        False,
    ),
    (re.compile(r"ssh: connect to host .*timed out"), "connection timed out: {server} did not answer", False),
    (re.compile(r"No route to host|Network is unreachable"), "host unreachable: no route to {server}", False),
    (
        re.compile(r"Could not resolve hostname"),
        "unknown host: the name of {server} could not be resolved",
        True,
    ),
    (
        re.compile(r"Connection (closed|reset) by|kex_exchange_identification"),
        "the SSH server at {server} closed the connection",
        False,
    ),
    (
        re.compile(r"Bad (local|remote) forwarding specification|Bad configuration option|command-line: line"),
        "ssh rejected the tunnel's configuration",
        True,
    ),
]


def explain(text: str, tunnel: Tunnel) -> tuple[str, bool] | None:
    """The last failure in ``text`` in words a user understands (plus ssh's own line)."""
    server = tunnel.remote_host.rsplit("@", 1)[-1] + (f":{tunnel.ssh_port}" if tunnel.ssh_port else "")
    for line in reversed(text.splitlines()):
        for pattern, message, needs_user in FAILURES:
            match = pattern.search(line)
            if match:
                words = message.format(listen=tunnel.listen, server=server, **match.groupdict())
                return f"{words} — ssh said: {redact(line.strip())[:300]}", needs_user
    return None


@dataclass
class Tracked:
    """A tunnel process this node runs (started or adopted)."""

    tunnel_id: int
    pid: int
    create_time: float | None
    pgid: int
    generation: int | None
    offset: int  # log position this process's output starts at
    popen: subprocess.Popen | None = None  # None when adopted from an earlier worker
    session_id: uuid_mod.UUID | None = None
    healthy: bool = False
    started: float = field(default_factory=time.monotonic)
    authenticated_at: float | None = None
    ssh_pids: list[int] = field(default_factory=list)
    seen: str = ""  # recent log text, for the -R "Authenticated to" check

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.same_process(self.pid, self.create_time)

    def pids(self) -> list[tuple[int, float | None]]:
        return [(self.pid, self.create_time), *((pid, None) for pid in self.ssh_pids)]


class Reconciler:
    def __init__(self, node: str | None = None, *, reap_orphans: bool = False) -> None:
        self.node = node or settings.NODE_NAME
        self.reap_orphans = reap_orphans
        self.scanner = processes.Scanner()
        self.tracked: dict[str, Tracked] = {}
        self._marker: int | None = None
        self._next_resync = 0.0
        self._next_heartbeat = 0.0
        self._wake_at: float | None = None
        self._started_at = timezone.now()
        # Per-user keys: this node's ssh-agent (tunnels.agent); started when a key is first needed.
        self.agent = Agent(node=self.node)
        self._key_touched: dict = {}
        # Connection tests run in their own threads; their keys go through this agent.
        self.preflights = PreflightRunner(self.node, agent=self.agent)
        self._changed_hosts: dict[tuple[int, str, int], str] | None = None  # per full pass (tunnels.hostkeys)

    # --- the pass ---------------------------------------------------------

    def reconcile_once(self, *, full: bool = False) -> bool:
        """One pass; returns True when it was a full pass. (The command closes stale connections first.)"""
        self.heartbeat()
        marker = services.marker_value()
        now = time.monotonic()
        died = self._reap_and_check()
        moved = marker != self._marker
        due = (
            full
            or died
            or moved
            or now >= self._next_resync
            or any(not tr.healthy for tr in self.tracked.values())
            or (self._wake_at is not None and now >= self._wake_at)
            or self.preflights.wants_pass
        )
        if not due:
            return False
        resync = now >= self._next_resync
        self._marker = marker
        if resync:
            self._next_resync = now + settings.WORKER_RESYNC_SECONDS
        self.full_pass(read_logs=resync or died or full, sync_keys=resync or full)
        if moved or resync or self.preflights.wants_pass:
            self._poll_preflights()
        return True

    def _poll_preflights(self) -> None:
        # Requests bump the marker, so tests are looked for only when it moved (and at resync).
        try:
            self.preflights.poll()
        except Exception:  # connection tests must never stop the tunnels
            logger.exception("connection tests: unexpected error")

    @property
    def busy(self) -> bool:
        """A tunnel is starting: worth looking again sooner than the interval."""
        return any(not tr.healthy for tr in self.tracked.values())

    def _reap_and_check(self) -> bool:
        if self.reap_orphans:
            processes.reap(orphans=True)
        return any(not tr.alive() for tr in self.tracked.values())

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        # Several beats per lease, but not a write every pass.
        self._next_heartbeat = now + min(1.0, settings.WORKER_LEASE_SECONDS / 4)
        values = {"last_seen": timezone.now(), "pid": os.getpid(), "hostname": socket.gethostname()}
        if not WorkerNode.objects.filter(name=self.node).update(**values):
            WorkerNode.objects.update_or_create(name=self.node, defaults={**values, "started_at": self._started_at})

    def live_nodes(self) -> set[str]:
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
        return set(WorkerNode.objects.filter(last_seen__gte=cutoff).values_list("name", flat=True)) | {self.node}

    def full_pass(self, *, read_logs: bool = True, sync_keys: bool = False) -> None:
        live = self.live_nodes()
        found = self.scanner.scan()
        mine_or_claimable = Q(node=self.node) | (
            ~Q(node__in=live) & (Q(desired_state=Desired.RUNNING) | ~Q(status=Status.STOPPED))
        )
        tunnels = list(Tunnel.objects.select_related("owner", "desired_by_token", "ssh_key").filter(mine_or_claimable))
        self._wake_at = None
        self._changed_hosts = None
        handled: set[str] = set()
        for tunnel in tunnels:
            key = str(tunnel.uuid)
            try:
                if tunnel.node != self.node and not self.claim(tunnel):
                    continue
                handled.add(key)
                self.reconcile_tunnel(tunnel, found.get(key, []), read_logs=read_logs)
            except Exception as exc:  # one bad tunnel must not stop the others
                logger.exception("tunnel %s: unexpected error", key)
                self._record_error(tunnel, f"worker error: {exc.__class__.__name__}: {exc}")
        self._forget_unhandled(handled, found, live)
        if sync_keys:
            self._sync_agent(tunnels)
            self._bound_logs(tunnels)

    # --- claiming -----------------------------------------------------------

    def claim(self, tunnel: Tunnel) -> bool:
        """Compare-and-swap the tunnel's node to ours; False if another node got there first."""
        previous = tunnel.node
        if Tunnel.objects.filter(pk=tunnel.pk, node=previous).update(node=self.node) != 1:
            return False
        tunnel.node = self.node
        logger.info("claimed tunnel %s (%s) from %s", tunnel.name, tunnel.uuid, previous or "no node")
        return True

    def _update(self, tunnel: Tunnel, **values) -> bool:
        """Write observed state, only while the tunnel is still ours."""
        if "status" in values and values["status"] != tunnel.status:
            values.setdefault("status_changed_at", timezone.now())
        updated = Tunnel.objects.filter(pk=tunnel.pk, node=self.node).update(**values) == 1
        if updated:
            for name, value in values.items():
                if not hasattr(value, "resolve_expression"):
                    setattr(tunnel, name, value)
        return updated

    # --- one tunnel ---------------------------------------------------------

    def reconcile_tunnel(self, tunnel: Tunnel, found: list[processes.Found], *, read_logs: bool = True) -> None:
        key = str(tunnel.uuid)
        tracked = self.tracked.get(key)
        groups = [f for f in found if not f.orphan]
        if tracked is None and groups:
            tracked = self.adopt(tunnel, groups[0])
        if tracked is not None:
            self._stop_strays(tunnel, tracked, found)
            mine = next((f for f in groups if f.pid == tracked.pid), None)
            tracked.ssh_pids = mine.ssh_pids if mine else []
            if not tracked.alive():
                if not self.on_exit(tunnel, tracked, found):
                    return
                tracked = None
        elif found:
            self._stop_found(found, "leftover processes of a tunnel that is not running")

        wanted = tunnel.desired_state == Desired.RUNNING
        problem = precondition_error(tunnel) if wanted else None
        if problem:
            # Only a configuration change fixes it: checked every pass, no retries, no back-off.
            self._keep_failed(tunnel, tracked, problem)
            return
        host_key_changed = self._host_key_block(tunnel, wanted)
        if host_key_changed:
            self._keep_failed(tunnel, tracked, host_key_changed)
            return
        if not wanted:
            if tracked is not None:
                self.stop(tunnel, tracked, ExitReason.STOPPED_BY_USER, "stop requested", ended_by=tunnel.desired_by)
            self._settle_stopped(tunnel)
            return
        if tracked is not None and tracked.generation != tunnel.generation:
            self.stop(tunnel, tracked, ExitReason.CONFIG_CHANGED, f"configuration generation {tunnel.generation}")
            tracked = None
        if tracked is not None:
            self.check(tunnel, tracked, read_logs=read_logs)
            return
        if tunnel.backoff_until and tunnel.backoff_until > timezone.now():
            wait = (tunnel.backoff_until - timezone.now()).total_seconds()
            wake = time.monotonic() + wait
            self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
            return
        if retries.held(tunnel):
            return  # a port clash gave up: only a start request or a new configuration retries
        self.start(tunnel, restart=tunnel.consecutive_failures > 0)

    def _settle_stopped(self, tunnel: Tunnel) -> None:
        values = {}
        if tunnel.status != Status.STOPPED:
            values.update(status=Status.STOPPED, pid=None, process_create_time=None)
        if tunnel.backoff_until or tunnel.consecutive_failures:
            values.update(backoff_until=None, consecutive_failures=0)
        if values:
            self._update(tunnel, **values)
        # Release the claim so a stopped tunnel costs no node anything; any node may start it later.
        if Tunnel.objects.filter(pk=tunnel.pk, node=self.node, desired_state=Desired.STOPPED).update(node="") == 1:
            tunnel.node = ""

    def _stop_strays(self, tunnel: Tunnel, tracked: Tracked, found: list[processes.Found]) -> None:
        """A second autossh for the same tunnel (e.g. from another node on this host) must go."""
        strays = [f for f in found if not f.orphan and f.pid != tracked.pid]
        if strays:
            self._stop_found(strays, f"duplicate process of tunnel {tunnel.name}")

    def _stop_found(self, found: list[processes.Found], why: str) -> None:
        for item in found:
            logger.info("stopping pid %s (%s): %s", item.pid, item.uuid, why)
            pids = [(item.pid, item.create_time), *((pid, None) for pid in item.ssh_pids)]
            processes.stop_group(item.pgid, pids, reap_orphans=self.reap_orphans)

    # --- starting, checking, stopping -----------------------------------------

    def start(self, tunnel: Tunnel, *, restart: bool = False) -> Tracked | None:
        hostkeys.sync_owner(tunnel.owner_id)  # the owner's known_hosts, as the database trusts them
        try:
            # Resolved here, at connect time, and ssh pinned to it: DNS cannot swap the address afterwards.
            address = netpolicy.resolve_destination(tunnel)
            command = command_for(tunnel, node=self.node, agent=self.agent, address=address)
        except (KeyUnusable, AgentError, NoKey, netpolicy.DestinationRefused) as exc:
            self.fail(tunnel, None, str(exc), True)
            return None
        popen, offset = processes.start(command.argv, command.env, tunnel.log_path, command.display)
        tracked = Tracked(
            tunnel_id=tunnel.pk,
            pid=popen.pid,
            create_time=processes.create_time(popen.pid),
            pgid=popen.pid,  # start_new_session: the leader of its own group
            generation=tunnel.generation,
            offset=offset,
            popen=popen,
        )
        self.tracked[str(tunnel.uuid)] = tracked
        now = timezone.now()
        values = dict(
            status=Status.STARTING,
            pid=popen.pid,
            process_create_time=tracked.create_time,
            running_generation=tunnel.generation,
            started_at=now,
        )
        if restart:
            values["restart_count"] = F("restart_count") + 1
        if tunnel.running_generation != tunnel.generation:
            values["consecutive_failures"] = 0  # a new configuration: failures (and port clashes) count afresh
        if not self._update(tunnel, **values):
            self.stop(tunnel, tracked, ExitReason.HANDED_OVER, "another node claimed the tunnel", record=False)
            return None
        tracked.session_id = self._open_session(tunnel, popen.pid, now).id
        logger.info("started tunnel %s (%s) pid %s: %s", tunnel.name, tunnel.uuid, popen.pid, command.display)
        return tracked

    def _open_session(self, tunnel: Tunnel, pid: int, when) -> TunnelSession:
        token = tunnel.desired_by_token
        return TunnelSession.objects.create(
            tunnel=tunnel,
            owner_id=tunnel.owner_id,
            tunnel_uuid=tunnel.uuid,
            name=tunnel.name,
            hash=tunnel.hash,
            direction=tunnel.direction,
            listen=tunnel.listen,
            node=self.node,
            pid=pid,
            started_at=when,
            requested_by_id=tunnel.desired_by_id,
            token=token,
            token_label=token.label if token is not None else "",
        )

    def adopt(self, tunnel: Tunnel, found: processes.Found) -> Tracked:
        """Take over a live process (after a worker restart or from a lost node on this host)."""
        tracked = Tracked(
            tunnel_id=tunnel.pk,
            pid=found.pid,
            create_time=found.create_time,
            pgid=found.pgid,
            generation=found.generation if found.generation is not None else tunnel.running_generation,
            offset=processes.read_log(tunnel.log_path, 0, 0)[1],
            ssh_pids=found.ssh_pids,
            healthy=tunnel.status == Status.RUNNING and tunnel.pid == found.pid,
        )
        self.tracked[str(tunnel.uuid)] = tracked
        session = TunnelSession.objects.filter(tunnel=tunnel, ended_at=None, pid=found.pid).first()
        if session is None:
            session = self._open_session(tunnel, found.pid, timezone.now())
        tracked.session_id = session.id
        if tunnel.pid != found.pid or tunnel.process_create_time != found.create_time:
            self._update(tunnel, pid=found.pid, process_create_time=found.create_time)
        logger.info("adopted tunnel %s (%s) pid %s", tunnel.name, tunnel.uuid, found.pid)
        return tracked

    def check(self, tunnel: Tunnel, tracked: Tracked, *, read_logs: bool = True) -> None:
        """Health: running only when the forward really works; a failure line in the log fails it."""
        if read_logs or not tracked.healthy:
            text, tracked.offset = processes.read_log(tunnel.log_path, tracked.offset)
            if text:
                tracked.seen = (tracked.seen + text)[-8192:]
                failure = self._explain(tunnel, text, tracked.seen)
                if failure:
                    self.fail(tunnel, tracked, *failure)
                    return
        if tracked.healthy:
            return
        if self._forward_up(tunnel, tracked):
            tracked.healthy = True
            self._update(tunnel, status=Status.RUNNING, last_error="", consecutive_failures=0, backoff_until=None)
            self._touch_key(tunnel)
            hostkeys.seen(tunnel)  # keep the key ssh trusted on first use
            logger.info("tunnel %s (%s) is running, pid %s", tunnel.name, tunnel.uuid, tracked.pid)
            return
        limit = autossh_gate_seconds()
        if time.monotonic() - tracked.started > limit:
            self.fail(tunnel, tracked, f"the tunnel did not come up within {limit} seconds (see its log)", False)

    def _forward_up(self, tunnel: Tunnel, tracked: Tracked) -> bool:
        if not tracked.ssh_pids:
            return False
        if tunnel.is_forward_local:
            host, port = split_local(tunnel.local_port)
            if not any(processes.listening_on(pid, port) for pid in tracked.ssh_pids):
                return False
            return _accepts(host, port)
        if "Authenticated to" not in tracked.seen:
            return False
        now = time.monotonic()
        if tracked.authenticated_at is None:
            tracked.authenticated_at = now
        return now - tracked.authenticated_at >= REMOTE_SETTLE

    def fail(self, tunnel: Tunnel, tracked: Tracked | None, reason: str, needs_user: bool) -> None:
        """Stop the attempt, record why in the tunnel, and schedule a retry with exponential back-off."""
        if tracked is not None:
            exit_reason = ExitReason.CRASHED if tracked.healthy else ExitReason.FAILED
            self.stop(tunnel, tracked, exit_reason, reason, settle=False)
        failures = tunnel.consecutive_failures + 1
        if retries.gives_up(reason, failures):
            self._update(
                tunnel,
                status=Status.FAILED,
                last_error=retries.held_reason(reason, failures),
                consecutive_failures=failures,
                backoff_until=None,  # no retry: see tunnels.retries
                pid=None,
                process_create_time=None,
            )
            logger.info("tunnel %s (%s) failed, not retried: %s", tunnel.name, tunnel.uuid, reason)
            return
        delay = min(settings.WORKER_BACKOFF_MAX, settings.WORKER_BACKOFF_BASE * 2 ** min(failures - 1, 20))
        status = Status.FAILED if needs_user or failures >= 3 else Status.BACKOFF
        self._update(
            tunnel,
            status=status,
            last_error=reason,
            consecutive_failures=failures,
            backoff_until=timezone.now() + timedelta(seconds=delay),
            pid=None,
            process_create_time=None,
        )
        wake = time.monotonic() + delay
        self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
        logger.info("tunnel %s (%s) %s, retry in %.1fs: %s", tunnel.name, tunnel.uuid, status, delay, reason)

    def on_exit(self, tunnel: Tunnel, tracked: Tracked, found: list[processes.Found]) -> bool:
        """The autossh process died. Returns True when the caller should carry on (start again)."""
        key = str(tunnel.uuid)
        text, tracked.offset = processes.read_log(tunnel.log_path, tracked.offset)
        failure = self._explain(tunnel, tracked.seen + text) if (text or tracked.seen) else None
        code = tracked.popen.returncode if tracked.popen is not None else None
        detail = failure[0] if failure else (f"exit status {code}" if code is not None else "the process disappeared")
        # A killed autossh leaves its ssh child behind, still holding the port.
        leftovers = [f for f in found if f.orphan]
        self._stop_found(leftovers, "ssh left behind by a dead autossh")
        processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
        was_healthy = tracked.healthy
        self._close_session(tracked, ExitReason.CRASHED if was_healthy else ExitReason.FAILED, detail)
        self.tracked.pop(key, None)
        logger.info("tunnel %s (%s) pid %s exited: %s", tunnel.name, tunnel.uuid, tracked.pid, detail)
        if tunnel.desired_state != Desired.RUNNING:
            return True
        if not tunnel.auto_restart:
            message = f"the tunnel's process exited ({detail}); auto restart is off, so it was not restarted"
            self._update(tunnel, status=Status.STOPPED, pid=None, process_create_time=None, last_error=message)
            Tunnel.objects.filter(pk=tunnel.pk, node=self.node).update(
                desired_state=Desired.STOPPED, desired_changed_at=timezone.now(), desired_by=None
            )
            tunnel.desired_state = Desired.STOPPED
            return True
        if was_healthy and not self._host_key_block(tunnel, True):
            self._update(tunnel, last_error=f"process exited ({detail}); restarted")
            self.start(tunnel, restart=True)
            return False
        self.fail(tunnel, None, detail, failure[1] if failure else False)
        return False

    def stop(
        self,
        tunnel: Tunnel,
        tracked: Tracked,
        reason: str,
        detail: str = "",
        *,
        ended_by=None,
        record: bool = True,
        settle: bool = True,
    ) -> None:
        key = str(tunnel.uuid)
        processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
        self.tracked.pop(key, None)
        self._close_session(tracked, reason, detail, ended_by=ended_by)
        logger.info("stopped tunnel %s (%s) pid %s: %s", tunnel.name, key, tracked.pid, reason)
        if record and settle:
            self._update(tunnel, status=Status.STOPPED, pid=None, process_create_time=None)

    def _close_session(self, tracked: Tracked, reason: str, detail: str, *, ended_by=None) -> None:
        if tracked.session_id is None:
            return
        TunnelSession.objects.filter(pk=tracked.session_id, ended_at=None).update(
            ended_at=timezone.now(), exit_reason=reason, exit_detail=detail[:2000], ended_by=ended_by
        )

    def _record_error(self, tunnel: Tunnel, message: str) -> None:
        # The owner reads last_error: an exception's text may name server paths (the log has them in full).
        try:
            self.fail(tunnel, self.tracked.get(str(tunnel.uuid)), redact(message), False)
        except Exception:
            logger.exception("tunnel %s: could not record the error", tunnel.uuid)

    # --- per-user keys (tunnels.agent) ------------------------------------------

    def _touch_key(self, tunnel: Tunnel) -> None:
        """The tunnel authenticated with its key: record it, at most once a minute per key."""
        if not tunnel.ssh_key_id:
            return
        now = time.monotonic()
        last = self._key_touched.get(tunnel.ssh_key_id)
        if last is not None and now - last < KEY_TOUCH_SECONDS:
            return
        self._key_touched[tunnel.ssh_key_id] = now
        SshKey.objects.filter(pk=tunnel.ssh_key_id).update(last_used_at=timezone.now())

    def _sync_agent(self, tunnels: list[Tunnel]) -> None:
        """At the resync: the agent holds exactly the keys of the tunnels this node runs."""
        needed = {
            t.ssh_key_id: t.ssh_key
            for t in tunnels
            if t.ssh_key_id and t.node == self.node and t.desired_state == Desired.RUNNING and not precondition_error(t)
        }
        needed.update(self.preflights.keys_in_use())  # a running connection test's key stays too
        try:
            self.agent.sync(needed.values())
        except (AgentError, OSError, subprocess.SubprocessError):
            logger.exception("could not synchronise the ssh-agent")

    # --- logs (tunnels.logfiles) ------------------------------------------------

    def _bound_logs(self, tunnels: list[Tunnel]) -> None:
        """At the resync (not every pass): rotate the logs this node's processes write and hold
        their owners to the per-user cap. A log overshoots LOG_MAX_BYTES by at most one interval's output."""
        running = {t.log_path: self.tracked[str(t.uuid)] for t in tunnels if str(t.uuid) in self.tracked}
        if not running:
            return
        owners = {t.owner_id for t in tunnels if t.log_path in running}
        by_owner: dict[int, list] = {}
        for owner_id, uuid in Tunnel.objects.filter(owner_id__in=owners).values_list("owner_id", "uuid"):
            by_owner.setdefault(owner_id, []).append(logfiles.path_for(uuid))
        try:
            emptied = logfiles.bound(running, by_owner)
        except OSError:
            logger.exception("could not rotate the tunnel logs")
            return
        for path in emptied & running.keys():
            running[path].offset = 0  # read what the process writes from now on

    # --- host keys (tunnels.hostkeys) -----------------------------------------

    def _host_key_block(self, tunnel: Tunnel, wanted: bool) -> str | None:
        """The error keeping ``tunnel`` down while its server's key changed (one query per pass, if any)."""
        if not wanted:
            return None
        if self._changed_hosts is None:
            self._changed_hosts = hostkeys.changed_targets()
        return hostkeys.blocked(wanted, tunnel.owner_id, hostkeys.tunnel_target(tunnel), self._changed_hosts)

    def _explain(self, tunnel: Tunnel, text: str, context: str | None = None) -> tuple[str, bool] | None:
        """``explain``, except that a changed host key (in ``context``, ssh's recent output) is recorded
        and keeps the tunnel down."""
        changed = hostkeys.record_change(tunnel, text if context is None else context)
        if changed is None:
            return explain(text, tunnel)
        if self._changed_hosts is not None:
            self._changed_hosts[(tunnel.owner_id, *hostkeys.tunnel_target(tunnel))] = changed
        return changed, True

    def _keep_failed(self, tunnel: Tunnel, tracked: Tracked | None, reason: str) -> None:
        """A precondition fails: no process, status failed with the reason, and no retries."""
        if tracked is not None:
            self.stop(tunnel, tracked, ExitReason.FAILED, reason)
        if tunnel.status != Status.FAILED or tunnel.last_error != reason:
            self._update(tunnel, status=Status.FAILED, last_error=reason, pid=None)

    # --- tunnels that are no longer ours --------------------------------------

    def _forget_unhandled(self, handled: set[str], found: dict[str, list[processes.Found]], live: set[str]) -> None:
        """Stop processes of deleted tunnels and of tunnels another node now runs."""
        keys = (set(self.tracked) | set(found)) - handled
        if not keys:
            return
        owners = {str(u): node for u, node in Tunnel.objects.filter(uuid__in=keys).values_list("uuid", "node")}
        for key in keys:
            node = owners.get(key)
            tracked = self.tracked.pop(key, None)
            if node is None:
                reason, detail = ExitReason.DELETED, "the tunnel was deleted"
            elif node != self.node and node in live:
                if tracked is None and all(f.node != self.node for f in found.get(key, [])):
                    continue  # another live node's process on this host: not ours to touch
                reason, detail = ExitReason.HANDED_OVER, f"node {node} runs this tunnel now"
            else:
                reason, detail = ExitReason.GONE, "no node runs this tunnel"
            if tracked is not None:
                processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
                self._close_session(tracked, reason, detail)
            self._stop_found(found.get(key, []), detail)
            if reason == ExitReason.DELETED:
                TunnelSession.objects.filter(tunnel_uuid=key, ended_at=None).update(
                    ended_at=timezone.now(), exit_reason=reason, exit_detail=detail
                )
            logger.info("tunnel %s: %s", key, detail)

    # --- shutting down -------------------------------------------------------

    def stop_all(self) -> None:
        """--stop-on-exit: stop every tunnel this node runs (desired state is kept)."""
        if not self.tracked:
            return
        tunnels = {str(t.uuid): t for t in Tunnel.objects.filter(uuid__in=list(self.tracked))}
        for key, tracked in list(self.tracked.items()):
            tunnel = tunnels.get(key)
            if tunnel is None:
                processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
                self.tracked.pop(key, None)
                continue
            self.stop(tunnel, tracked, ExitReason.WORKER_EXIT, "worker shut down with --stop-on-exit")


def precondition_error(tunnel: Tunnel) -> str | None:
    """Why ``tunnel`` cannot run as configured (a pure check of its row), or None."""
    if tunnel.interactive:
        return INTERACTIVE_ERROR
    refused = netpolicy.row_problem(tunnel)  # the row may predate the policy, or a grant was withdrawn
    if refused:
        return refused
    if tunnel.ssh_key_id is None:
        # Never the server's key for a user's tunnel: it would reach every server that trusts it.
        return None if tunnel.owner.is_staff else NO_KEY_ERROR
    if tunnel.ssh_key.is_expired():
        return f"SSH key {tunnel.ssh_key.name!r} has expired: attach another key or renew it"
    return None


def _accepts(host: str, port: int) -> bool:
    """True if a TCP connection to the forward's local end succeeds."""
    # A wildcard bind is probed on loopback (nothing here binds; S104 is about binding).
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=0.3):
            return True
    except OSError:
        return False
