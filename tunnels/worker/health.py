"""Health: is a tunnel's forward really up (from the latest evidence), and failing it with a reason."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tunnels import processes, retries
from tunnels.models import ExitReason, Status, Tunnel
from tunnels.validation import split_local
from tunnels.worker import outage
from tunnels.worker.evidence import (  # noqa: F401 - FAILURES and explain are re-exported
    FAILURES,
    authenticated_last,
    describe_exit,
    describe_returncode,
    explain,
    since_last_start,
)
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

# After "Authenticated to", a refused -R forward is reported within one round
# trip; a forward that has not failed after this long is taken as up.
REMOTE_SETTLE = 0.5
# A dropped connection not back this long after its server answers again is restarted by the worker
# (autossh's own retries come 0-2 s apart early in an outage, much further apart later).
RECONNECT_GRACE = 3.0
# How much of an adopted process's log is read back to learn its state.
READ_BACK_BYTES = 64 * 1024


class Health:
    """Reconciler mixin: checking a tracked process and failing it with a reason."""

    def check(self, tunnel: Tunnel, tracked: Tracked, *, read_logs: bool = True) -> None:
        """Health from the latest evidence: ``-L`` from the port, ``-R`` from the log since the
        current connection. A working tunnel whose ssh child is unchanged costs nothing."""
        if tracked.healthy:
            exited = getattr(self, "exited", {})  # its ssh exited (the loop): a dropped connection
            if any(pid in exited for pid in tracked.ssh_pids):
                # (a zombie its autossh has not reaped yet is still listed among the children)
                tracked.ssh_pids = [pid for pid in processes.children(tracked.pid) or [] if pid not in exited]
            if tracked.connection is None or tuple(sorted(tracked.ssh_pids)) == tracked.connection:
                return
            self._connection_dropped(str(tunnel.uuid), tracked)
        text, tracked.offset = processes.read_log(tunnel.log_path, tracked.offset)
        tracked.seen = (tracked.seen + text)[-8192:]
        failure = self._explain(tunnel, tracked.seen, tracked.seen) if tracked.seen else None
        # Autossh retries a dropped connection itself: only a failure the owner must fix ends it.
        if failure and (failure[1] or tracked.reconnecting is None):
            self.fail(tunnel, tracked, *failure)
            return
        if self._forward_up(tunnel, tracked):
            self._came_up(tunnel, tracked)
            return
        if tracked.reconnecting is not None:
            self._await_reconnect(tunnel, tracked, failure[0] if failure else None)
        # Not up yet: the start deadline is the pass's decision (tunnels.worker.decide).

    def read_back(self, tunnel: Tunnel, tracked: Tracked) -> None:
        """An adopted process: its state comes from what it wrote since its last start (and, in
        ``check``, from its port), never from what the previous worker last wrote down."""
        text, tracked.offset = processes.read_log(tunnel.log_path, 0, READ_BACK_BYTES)
        tracked.seen = since_last_start(text)[-8192:]
        tracked.healthy = False  # until check() sees the forward work, this very pass
        failure = explain(tracked.seen, tunnel)
        worked = tunnel.status == Status.RUNNING or tunnel.last_error.startswith("reconnecting:")
        if failure and not failure[1] and worked and not tracked.master:
            tracked.reconnecting = time.monotonic()  # a drop autossh is retrying, as before the restart

    def exit_words(self, tracked: Tracked) -> str:
        """Why ``tracked``'s autossh ended: its real exit status or signal."""
        status = getattr(self, "exited", {}).get(tracked.pid)  # raw wait statuses (tunnels.worker.loop)
        if status is not None:
            return describe_exit(status)
        if tracked.popen is not None and tracked.popen.returncode is not None:
            return describe_returncode(tracked.popen.returncode)
        return describe_exit(None)

    def _connection_dropped(self, key: str, tracked: Tracked) -> None:
        """The ssh child of a working tunnel changed or exited: its connection dropped."""
        tracked.healthy = False
        self.tracked.unsettle(key)
        tracked.connection = None
        tracked.seen = ""  # evidence from here on is about the next connection
        tracked.authenticated_at = None
        tracked.reconnecting = time.monotonic()
        tracked.server_back = None
        logger.info("tunnel %s: the SSH connection dropped, autossh reconnects", key)

    def _came_up(self, tunnel: Tunnel, tracked: Tracked) -> None:
        again = tracked.reconnecting is not None
        tracked.healthy = True
        tracked.connection = tuple(sorted(tracked.ssh_pids))
        # The connection's ssh is watched from now on: its exit (a drop) wakes the loop, so no
        # running tunnel costs a look between passes (tunnels.worker.exits).
        self.watch_tracked(tracked)
        tracked.reconnecting = tracked.server_back = None
        self.probes.forget(tunnel)
        if tunnel.status != Status.RUNNING or tunnel.last_error or tunnel.consecutive_failures or tunnel.backoff_until:
            self._update(tunnel, status=Status.RUNNING, last_error="", consecutive_failures=0, backoff_until=None)
        self._touch_key(tunnel)
        self.host_files.seen(tunnel)  # keep the key ssh trusted on first use (tunnels.worker.hostfiles)
        if tracked.master:
            self.login_succeeded(tunnel, tracked)
        verb = "reconnected" if again else "is running"
        logger.info("tunnel %s (%s) %s, pid %s", tunnel.name, tunnel.uuid, verb, tracked.pid)

    def _await_reconnect(self, tunnel: Tunnel, tracked: Tracked, reason: str | None) -> None:
        """A dropped connection that autossh is retrying: not running (with the reason) but not killed.

        Its server is probed (one TCP connect per server per step, tunnels.worker.outage). A tunnel
        still down ``RECONNECT_GRACE`` after its server answers again is restarted at once: autossh's
        own back-off grows to AUTOSSH_POLL during a long outage. (Signalling autossh to retry is no
        option: it dies of SIGHUP/SIGUSR1 while it sleeps between tries.)
        """
        words = f"reconnecting: {reason or 'the SSH connection dropped'}"
        if tunnel.status != Status.STARTING or tunnel.last_error != words:
            self._update(tunnel, status=Status.STARTING, last_error=words)
        now = time.monotonic()
        if not self.probes.answers(tunnel):
            tracked.server_back = None
            return
        if tracked.server_back is None:
            tracked.server_back = now
        if now - tracked.server_back < RECONNECT_GRACE:
            return
        detail = f"{reason or 'the SSH connection dropped'}; not back {RECONNECT_GRACE:.0f} s after the server answered"
        logger.info("tunnel %s (%s): restarted now: %s", tunnel.name, tunnel.uuid, detail)
        self.stop(tunnel, tracked, ExitReason.CRASHED, detail, settle=False)
        self.start(tunnel, restart=True)

    def backoff_left(self, tunnel: Tunnel, remaining: float) -> float:
        """Seconds of back-off left; none once the server a tunnel waits for answers again.

        Probing (one TCP connect per server per step, shared by its tunnels) replaces waiting out
        a back-off that grew during the outage: every tunnel of the server is retried at its first answer.
        """
        if remaining <= 0 or not outage.server_down(tunnel.last_error):
            return remaining
        if self.probes.returned(tunnel):
            logger.info("tunnel %s (%s): its server answers again, retried now", tunnel.name, tunnel.uuid)
            return 0.0
        return remaining

    def retry_at(self, tunnel: Tunnel, expiry: float) -> float:
        """When a backing-off tunnel wants a pass: its expiry, or its server's next probe if sooner."""
        if not outage.server_down(tunnel.last_error):
            return expiry
        return min(expiry, time.monotonic() + outage.PROBE_SECONDS)

    def _forward_up(self, tunnel: Tunnel, tracked: Tracked) -> bool:
        holders = tracked.forward_pids()
        if not holders:
            return False
        if tunnel.is_forward_local:
            if tracked.log_whole and not tracked.master and not tracked.logged_in:
                # ssh binds the forward only after its "Authenticated to" line (LogLevel VERBOSE): until
                # that line is in the log, no socket table is read for the tunnel.
                return False
            _, port = split_local(tunnel.local_port)
            # One read of the machine's listening sockets per pass, matched against this ssh's fds only. A
            # socket of ssh's in LISTEN on the port is the forward up: ssh binds it once it has logged in.
            # (A test connection proved no more, since the kernel accepts into the backlog, and it made ssh
            # open a channel to the far end on every check: 15 % of the worker's CPU in a start-all of 500.)
            return processes.holds_listener(holders, port, self.listening_table())
        if not authenticated_last(tracked.seen):
            return False
        now = time.monotonic()
        if tracked.authenticated_at is None:
            tracked.authenticated_at = now
        return now - tracked.authenticated_at >= REMOTE_SETTLE

    def fail(self, tunnel: Tunnel, tracked: Tracked | None, reason: str, needs_user: bool) -> None:
        """Stop the attempt, record why in the tunnel, and schedule a retry with exponential back-off
        (an interactive tunnel's login is never retried: tunnels.worker.logins)."""
        if tunnel.interactive:
            self.login_failed(tunnel, tracked, reason)
            return
        if tracked is not None:
            exit_reason = ExitReason.CRASHED if tracked.healthy else ExitReason.FAILED
            self.stop(tunnel, tracked, exit_reason, reason, settle=False)
        failures = tunnel.consecutive_failures + 1
        if outage.server_down(reason):
            self.probes.failed(tunnel)
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
