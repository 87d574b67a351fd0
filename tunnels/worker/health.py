"""Health: is a tunnel's forward really up, and what do ssh's failure lines mean for its owner."""

from __future__ import annotations

import logging
import re
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tunnels import hostkeys, processes, retries
from tunnels.models import ExitReason, Status, Tunnel
from tunnels.ssh import redact
from tunnels.validation import split_local
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

# After "Authenticated to", a refused -R forward is reported within one round
# trip; a forward that has not failed after this long is taken as up.
REMOTE_SETTLE = 0.5

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


class Health:
    """Reconciler mixin: checking a tracked process and failing it with a reason."""

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
        # Not up yet: the start deadline is the pass's decision (tunnels.worker.decide).

    def _forward_up(self, tunnel: Tunnel, tracked: Tracked) -> bool:
        if not tracked.ssh_pids:
            return False
        if tunnel.is_forward_local:
            host, port = split_local(tunnel.local_port)
            # One read of the machine's listening sockets per pass, matched against this ssh's fds only.
            if not processes.holds_listener(tracked.ssh_pids, port, self.listening_table()):
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


def _accepts(host: str, port: int) -> bool:
    """True if a TCP connection to the forward's local end succeeds."""
    # A wildcard bind is probed on loopback (nothing here binds; S104 is about binding).
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=0.3):
            return True
    except OSError:
        return False
