"""From a tunnel's state to a step and back: the view ``decide`` reads, and carrying out its decision.

``Step`` is what one pass knows about one tunnel beyond the database row and
the tracked process: the processes the scan found for it, an exit reaped in
this pass, whether it was checked already. Each ``_do_<action>`` returns True
when the step changed what the view shows, so the tunnel is decided again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from tunnels import processes, retries
from tunnels.models import Desired, ExitReason, Tunnel
from tunnels.ssh import autossh_gate_seconds
from tunnels.worker.decide import Decision, Exit, Owner, View, precondition_error
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")


@dataclass
class Step:
    """One tunnel within one pass."""

    found: list[processes.Found] = field(default_factory=list)
    live: set[str] = field(default_factory=set)  # nodes with a lease (full passes; busy passes see only ours)
    read_logs: bool = True
    exit: Exit | None = None
    checked: bool = False
    lost: bool = False  # another node has it


class Acting:
    """Reconciler mixin: the view of one tunnel, and what each decision does."""

    def view(self, tunnel: Tunnel, step: Step) -> View:
        tracked = self.tracked.get(str(tunnel.uuid))
        wanted = tunnel.desired_state == Desired.RUNNING
        groups = [f for f in step.found if not f.orphan]
        limit = autossh_gate_seconds()
        return View(
            wanted=wanted,
            owner=self._owner(tunnel, step),
            problem=precondition_error(tunnel) if wanted else None,
            host_key_block=self._host_key_block(tunnel, wanted),
            tracked=tracked is not None,
            alive=tracked is not None and tracked.alive(),
            healthy=tracked is not None and tracked.healthy,
            generation_matches=tracked is None or tracked.generation == tunnel.generation,
            checked=step.checked,
            start_deadline_passed=_deadline_passed(tracked, limit),  # (a reconnecting tunnel has none)
            start_limit=limit,
            groups=len(groups) if tracked is None else 0,
            strays=sum(1 for f in groups if f.pid != tracked.pid) if tracked is not None else 0,
            leftovers=len(step.found) if tracked is None else 0,
            exit=step.exit,
            auto_restart=tunnel.auto_restart,
            backoff_remaining=self.backoff_left(tunnel, _remaining(tunnel)),
            held=retries.held(tunnel),
            restart=tunnel.consecutive_failures > 0 or self._queued.get(tunnel.pk, False),
            start_slot=self._start_slot(),
            interactive=tunnel.interactive,
            login_over=tunnel.interactive and tunnel.running_generation == tunnel.generation,
        )

    def _owner(self, tunnel: Tunnel, step: Step) -> Owner:
        if tunnel.node == self.node:
            return Owner.ME
        return Owner.PEER if tunnel.node in step.live else Owner.FREE

    def act(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        """Carry out ``decision``; True when the tunnel should be decided again."""
        return getattr(self, f"_do_{decision.action.name.lower()}")(tunnel, decision, step)

    # --- ownership and processes found ---------------------------------------

    def _do_claim(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        step.lost = not self.claim(tunnel, process_here=any(not f.orphan for f in step.found))
        return not step.lost

    def _do_leave(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        step.lost = True
        return False

    def _do_adopt(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        if self.adopt(tunnel, next(f for f in step.found if not f.orphan)) is None:
            step.found = []  # a master that did not answer: stopped, the tunnel needs a new login
            return False
        return True

    def _do_stop_strays(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        tracked = self.tracked[str(tunnel.uuid)]
        strays = [f for f in step.found if not f.orphan and f.pid != tracked.pid]
        self._stop_found(strays, f"duplicate process of tunnel {tunnel.name}")
        step.found = [f for f in step.found if f not in strays]
        return True

    def _do_stop_leftovers(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._stop_found(step.found, decision.reason)
        step.found = []
        return True

    # --- exits ------------------------------------------------------------------

    def _do_reap(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        step.exit = self.reap_exit(tunnel, self.tracked[str(tunnel.uuid)], step.found)
        step.found = []  # its own group is gone, orphans were stopped with it
        return True

    def _do_disable(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self.disable(tunnel, decision.reason)
        return True

    def _do_restart(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._spawn(tunnel, restart=True)  # first: no write may delay the restart
        if str(tunnel.uuid) in self.tracked:  # (a start that failed wrote its own reason)
            self._update(tunnel, last_error=decision.reason)
        return False

    def _do_login_failed(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self.login_failed(tunnel, self.tracked.get(str(tunnel.uuid)), decision.reason)
        return False

    def _do_needs_auth(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self.needs_auth(tunnel, self.tracked.get(str(tunnel.uuid)), decision.reason)
        return False

    def _do_fail(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self.fail(tunnel, self.tracked.get(str(tunnel.uuid)), decision.reason, decision.needs_user)
        return False

    # --- desired state ------------------------------------------------------------

    def _do_keep_failed(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._keep_failed(tunnel, self.tracked.get(str(tunnel.uuid)), decision.reason)
        return False

    def _do_stop(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        key = str(tunnel.uuid)
        self.stop_later(
            key, tunnel, self.tracked[key], ExitReason.STOPPED_BY_USER, decision.reason,
            ended_by=tunnel.desired_by_id, settle=True,
        )  # fmt: skip
        return False

    def _do_settle(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._settle_stopped(tunnel)
        return False

    def _do_replace(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        tracked = self.tracked[str(tunnel.uuid)]
        self.stop(tunnel, tracked, ExitReason.CONFIG_CHANGED, f"configuration generation {tunnel.generation}")
        step.found = []  # what the scan saw of it is gone now
        return True

    # --- a tracked process ----------------------------------------------------------

    def _do_check(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        tracked = self.tracked[str(tunnel.uuid)]
        if not tracked.healthy:
            if tracked.first_check is None:
                tracked.first_check = time.monotonic()
            # autossh's ssh, without a scan of the machine (a master's only child is its askpass helper)
            children = None if tracked.master else processes.children(tracked.pid)
            if children:
                tracked.ssh_pids = children
        self.check(tunnel, tracked, read_logs=step.read_logs)
        step.checked = True
        # Not up yet (and not failed by the check): the deadline is decided next.
        return self.tracked.get(str(tunnel.uuid)) is tracked and not tracked.healthy

    def _do_wait_up(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        return False

    # --- starting ----------------------------------------------------------------------

    def _do_wait_backoff(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        return False  # the pass schedules it (Reconciler._schedule)

    def _do_hold(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        return False

    def _do_queue(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._queued[tunnel.pk] = decision.restart or self._queued.get(tunnel.pk, False)
        if step.exit is not None:
            self._update(tunnel, last_error=decision.reason)
        return False

    def _do_start(self, tunnel: Tunnel, decision: Decision, step: Step) -> bool:
        self._spawn(tunnel, restart=decision.restart)
        return False

    def _spawn(self, tunnel: Tunnel, *, restart: bool) -> None:
        self._queued.pop(tunnel.pk, None)
        self._starts_left -= 1
        self._authenticating += 1
        self.start(tunnel, restart=restart)

    def _start_slot(self) -> bool:
        """One more start fits this pass's batch and the startups in flight (recounted once when full)."""
        if self._starts_left <= 0:
            return False
        if self._authenticating < settings.WORKER_MAX_STARTUPS:
            return True
        if not self._recounted:
            self._recounted = True
            self._authenticating = self._count_authenticating()
        return self._authenticating < settings.WORKER_MAX_STARTUPS

    def _count_authenticating(self) -> int:
        return sum(1 for _, tracked in self.tracked.unsettled() if tracked.authenticating)


def _deadline_passed(tracked: Tracked | None, limit: float) -> bool:
    if tracked is None or tracked.first_check is None or tracked.reconnecting is not None:
        return False
    since = tracked.first_check
    login = tracked.login
    if login is not None:  # a master's login: counted from its last question or answer, not while one waits
        if login.waiting:
            return False
        since = max(since, login.last_event)
    return time.monotonic() - since > limit


def _remaining(tunnel: Tunnel) -> float:
    if not tunnel.backoff_until:
        return 0.0
    return max(0.0, (tunnel.backoff_until - timezone.now()).total_seconds())
