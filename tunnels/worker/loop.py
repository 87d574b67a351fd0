"""The worker's run loop: passes of the reconciler, woken by events, until SIGTERM/SIGINT.

The loop sleeps in one selector (tunnels.worker.wake) until the earliest of: a
signal, a watched process exiting, a change notification, the reconciler's next
due time (``Reconciler.next_due``: a starting tunnel's check, a back-off expiry,
a peer's lease expiry, the heartbeat, the resync), or the fallback read of the
change marker. A pass
that fails because the database is away or locked is retried with a capped
back-off and reported once per state change (tunnels.worker.trouble).
"""

from __future__ import annotations

import logging
import resource
import time

from django.conf import settings
from django.db import close_old_connections

from tunnels import processes
from tunnels.ssh import askpass
from tunnels.worker.exits import FDS_RESERVED, POLL_SECONDS
from tunnels.worker.reconciler import Reconciler
from tunnels.worker.trouble import Trouble
from tunnels.worker.wake import Wake, Woken
from tunnelsite.dblocks import lock_wait

logger = logging.getLogger("tunnelsite.worker")
# File descriptors a worker needs per tunnel: a pidfd for autossh and one for its ssh.
FDS_PER_TUNNEL = 2
# On SQLite, a pass's writes wait at most this long for another writer's lock (not the 10 s busy
# timeout): a pass stuck behind a lock would hold up restarting a crashed tunnel; failing fast puts
# the loop in database trouble, whose passes still spawn before they write.
PASS_LOCK_WAIT = 1.0
FDS_WANTED = 4096
# Where the worker may (as root), the hard limit goes this far: two pidfds for each of 32,000 tunnels,
# beyond the machine's other limits (pid_max 32,768 by default, the local port range).
FDS_ROOM = 65536


class Loop:
    def __init__(self, node: str, interval: float, *, stop_on_exit: bool = False) -> None:
        self.node = node
        self.interval = interval  # marker poll while no change notification works
        self.stop_on_exit = stop_on_exit
        self.stopping = False
        raise_open_files_limit()
        processes.become_subreaper()
        self.reconciler = Reconciler(node, reap_orphans=True)
        self.trouble = Trouble(node)
        self.wake: Wake | None = None
        self._next_marker_poll = 0.0

    def once(self) -> None:
        """--once: one full pass, then wait for connection tests it started."""
        self.reconciler.reconcile_once(full=True)
        self.reconciler.preflights.shutdown(wait=True)

    def run(self) -> None:
        try:
            askpass.install()  # the helper interactive tunnels' ssh runs (a new version, a new name)
        except OSError as exc:
            logger.warning("askpass helper not installed yet (tried again at the first login): %s", exc)
        self.wake = Wake(self.reconciler.exits)
        self.wake.install_signals(self.on_signal)
        logger.info("worker %s started (marker poll %.2fs without notifications)", self.node, self.interval)
        woken = Woken(changed=True)
        try:
            while not self.stopping:
                self.step(woken)
                if self.stopping:
                    break
                woken = self.wake.wait(self.timeout())
        finally:
            self.shutdown()
            self.wake.close()

    # --- one wake-up -------------------------------------------------------

    def step(self, woken: Woken) -> None:
        reconciler = self.reconciler
        now = time.monotonic()
        if self.trouble.active and now < self.trouble.retry_at:
            reconciler.collect_exits()
            self.offline()
        else:
            try:
                close_old_connections()  # a connection the database dropped is replaced, not reused
                full = self.trouble.active  # after trouble, look at everything again
                if self.wake.ensure_source(self.node):
                    woken.changed = True  # changes made while nobody listened
                reconciler.check_marker = woken.changed or now >= self._next_marker_poll
                if reconciler.check_marker:
                    self._next_marker_poll = now + self.marker_poll()
                with lock_wait(PASS_LOCK_WAIT):
                    reconciler.reconcile_once(full=full)
                self.trouble.recovered()
            except Exception as exc:
                self.trouble.failed(exc)
                if self.trouble.database:
                    self.wake.drop_source()  # its connection is as dead as the other
                self.offline()
        if woken.sigchld:
            reconciler.exits.take_orphans()  # after the pass: restarting comes first

    def offline(self) -> None:
        """Database trouble: still restart what exited (tunnels.worker.bookkeeping, if it can)."""
        offline_pass = getattr(self.reconciler, "offline_pass", None)
        if offline_pass is None or not self.reconciler.exited:
            return
        try:
            offline_pass()
        except Exception:
            logger.exception("restarting without the database failed")

    def marker_poll(self) -> float:
        """Seconds until the change marker is read again without a notification."""
        return settings.WORKER_FALLBACK_POLL if self.wake.listening else self.interval

    def timeout(self) -> float:
        """Seconds until the earliest thing the loop must do if no event comes first."""
        now = time.monotonic()
        if self.trouble.active:
            return self.trouble.retry_at - now
        reconciler = self.reconciler
        # The reconciler's own times include a peer's lease expiry: its tunnels are claimed at that moment.
        due = [self._next_marker_poll, reconciler.next_due(), self.trouble.note_until]
        if reconciler.exits.polling:
            due.append(now + POLL_SECONDS)
        return max(0.0, min(d for d in due if d is not None) - now)

    # --- stopping ------------------------------------------------------------

    def shutdown(self) -> None:
        reconciler = self.reconciler
        reconciler.preflights.shutdown()
        reconciler.close_broker()  # a helper still waiting is refused: its login fails, the master stays
        if self.stop_on_exit:
            reconciler.stop_all()
            reconciler.agent.stop()  # the keys go with it
        logger.info(
            "worker %s stopped (%d tunnels %s)",
            self.node,
            len(reconciler.tracked),
            "stopped" if self.stop_on_exit else "left running",
        )

    def on_signal(self, signum, frame) -> None:
        # Only set a flag: the loop finishes its pass and exits (the wake-up fd ends its sleep).
        self.stopping = True


def raise_open_files_limit() -> int:
    """A pidfd per tunnel process: raise the soft open-files limit to the hard one (and the hard one
    to ``FDS_ROOM`` where allowed); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _nr_open()
    room = min(FDS_ROOM, _nr_open())
    if hard < room:
        try:  # needs CAP_SYS_RESOURCE: a root worker; others keep the hard limit they were given
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, room))
            hard = room
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    if soft != resource.RLIM_INFINITY and soft < FDS_WANTED:
        logger.warning(
            "open-files limit %d: beyond about %d tunnels, exits are found by polling (raise LimitNOFILE / ulimit -n)",
            soft,
            max(0, soft - FDS_RESERVED) // FDS_PER_TUNNEL,
        )
    return soft


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 1 << 20
