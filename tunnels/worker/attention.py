"""What needs attention between full passes: the tunnels a busy pass visits, and when the next is due."""

from __future__ import annotations

import itertools
import os
import time

from django.conf import settings
from django.utils import timezone

from tunnels.models import Desired, Tunnel
from tunnels.ssh import autossh_gate_seconds
from tunnels.worker.tracked import Tracked

# Starting tunnels are looked at every CHECK_MIN s when one starts ("running" shows up within that of
# its forward working), less often as more start at once, up to CHECK_MAX: each busy pass costs a query
# and a few lookups whatever it finds, and with many starting a pass finds more (a tunnel that cannot
# have moved costs a stat, ``_may_move``).
CHECK_MIN = 0.02
CHECK_MAX = 0.05
CHECK_PER_TUNNEL = 0.003


class Attention:
    """Reconciler mixin: queued starts, back-offs that come due, starting tunnels that can have moved."""

    def next_due(self) -> float | None:
        """The monotonic time the next pass is wanted: a starting tunnel's next check, a queued start,
        a back-off's expiry, a peer's lease expiry, the heartbeat, the resync. (Events — the marker, an exit —
        may come sooner.)"""
        times = [self._next_resync, self._next_heartbeat]
        if self.preflights.wants_pass:
            times.append(time.monotonic())
        if self._peer_expiry is not None:
            times.append(self._peer_expiry)
        if self._due:
            times.append(min(self._due.values()))
        if self._queued:
            times.append(self._last_pass + CHECK_MAX)
        starting = len(self.tracked.unsettled())
        if starting:
            times.append(self._last_pass + min(CHECK_MAX, CHECK_MIN + CHECK_PER_TUNNEL * (starting - 1)))
        return min(times)

    def _attention(self, now: float) -> set[int]:
        # (a login waiting for a person's answer needs no look: its ssh is blocked on the question)
        ids = {tr.tunnel_id for key, tr in self.tracked.unsettled() if self._may_move(key, tr, now)}
        if self.exited:  # an autossh or one of its ssh exited (tunnels.worker.exits)
            ids.update(tr.tunnel_id for tr in self.tracked.values() if not self.exited.keys().isdisjoint(tr.watched()))
        ids.update(pk for pk, when in self._due.items() if when <= now)
        if self._queued:  # the first in the queue, as many as may start now
            free = min(settings.WORKER_START_BATCH, settings.WORKER_MAX_STARTUPS - self._count_authenticating())
            ids.update(itertools.islice(self._queued, max(0, free)))
        return ids

    def _may_move(self, key: str, tracked: Tracked, now: float) -> bool:
        """Whether a starting tunnel can have moved on since its last check, told without the database.

        Until ssh has logged in (its "Authenticated to" line), a tunnel started here only moves by
        writing to its log (a failure, the login), by exiting (an event of its own) or by its deadline
        passing; a tunnel waiting for that costs one stat per pass, not a row, a log read and a decision.
        """
        if tracked.waiting_for_answer:
            return False
        if tracked.first_check is None or tracked.logged_in or not tracked.log_whole:
            return True
        if tracked.master or tracked.reconnecting is not None:
            return True
        if now - tracked.first_check >= autossh_gate_seconds():
            return True
        try:
            return os.stat(self.log_file(key)).st_size != tracked.offset
        except OSError:
            return True

    def _schedule(self, tunnel: Tunnel) -> None:
        """After a tunnel's turn: remember a back-off to come back to, forget a start it no longer waits for."""
        key = str(tunnel.uuid)
        waiting = tunnel.desired_state == Desired.RUNNING and key not in self.tracked and tunnel.node == self.node
        if waiting and tunnel.backoff_until:
            remaining = (tunnel.backoff_until - timezone.now()).total_seconds()
            self._due[tunnel.pk] = self.retry_at(tunnel, time.monotonic() + max(0.0, remaining))
        else:
            self._due.pop(tunnel.pk, None)
        if not waiting:
            self._queued.pop(tunnel.pk, None)

    def _forget_attention(self, seen: set[int], among: set[int] | None = None) -> None:
        """Queued starts and back-offs of tunnels the pass did not get (deleted, or not ours)."""
        for pending in (self._queued, self._due):
            # A busy pass looks only among the tunnels it read: not through every queued start (10,000 at times).
            candidates = pending.keys() if among is None else among
            for pk in [pk for pk in candidates if pk in pending and pk not in seen]:
                del pending[pk]
