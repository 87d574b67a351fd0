"""Decisions without side effects: what a tunnel's row and state call for.

``decide(view)`` takes one tunnel's desired and observed state as plain values
(a ``View``) and names the one next step (a ``Decision``). The reconciler
builds the view, acts, and asks again while the step changed what it sees
(an adoption, a reaped exit, a stopped stray, a check that found the forward
not up yet): the rules live here, processes and the database at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tunnels import netpolicy
from tunnels.models import Tunnel
from tunnels.ssh import NO_KEY_ERROR

GONE_MASTER = (
    "its ssh master is gone (a restarted worker or another node cannot log in again without you): "
    "start it again and log in"
)


def precondition_error(tunnel: Tunnel) -> str | None:
    """Why ``tunnel`` cannot run as configured (a pure check of its row), or None."""
    refused = netpolicy.row_problem(tunnel)  # the row may predate the policy, or a grant was withdrawn
    if refused:
        return refused
    if tunnel.ssh_key_id is None:
        if tunnel.interactive:
            return None  # a password login needs no key (and never gets the server's)
        # Never the server's key for a user's tunnel: it would reach every server that trusts it.
        return None if tunnel.owner.is_staff else NO_KEY_ERROR
    if tunnel.ssh_key.is_expired():
        return f"SSH key {tunnel.ssh_key.name!r} has expired: attach another key or renew it"
    return None


class Owner(StrEnum):
    """Which node the tunnel's row names."""

    ME = "me"
    FREE = "free"  # no node, or a node whose lease ran out: ours to claim
    PEER = "peer"  # a live node: not ours to touch


class Action(StrEnum):
    CLAIM = "claim"  # compare-and-swap the row's node to ours
    LEAVE = "leave"  # a live peer runs it
    ADOPT = "adopt"  # a live process of ours, not tracked yet (a restarted worker)
    STOP_STRAYS = "stop strays"  # a second process group of the same tunnel
    REAP = "reap"  # the process exited: read what it said, close its session
    STOP_LEFTOVERS = "stop leftovers"  # processes of a tunnel that is not running
    DISABLE = "disable"  # exited with auto restart off: desired becomes stopped
    RESTART = "restart"  # exited after it had run: start again at once
    FAIL = "fail"  # stop the attempt, back off (or hold)
    KEEP_FAILED = "keep failed"  # cannot run as configured: no process, no retries
    STOP = "stop"  # a stop was requested
    SETTLE = "settle"  # not wanted, no process: status stopped, claim released
    REPLACE = "replace"  # a new configuration: stop the old process, then start
    CHECK = "check"  # read its log, probe the forward
    WAIT_UP = "wait up"  # checked, not up yet, still within the start deadline
    WAIT_BACKOFF = "wait back-off"
    HOLD = "hold"  # port clashes gave up: only a start request or a new configuration retries
    QUEUE = "queue"  # wanted, but no start slot this pass (batch or max startups)
    START = "start"
    LOGIN_FAILED = "login failed"  # interactive: failed, desired stopped, never retried
    NEEDS_AUTH = "needs auth"  # interactive: its master is gone; only a person can log in again


@dataclass(frozen=True)
class Exit:
    """What a reaped process left behind."""

    detail: str  # in the owner's words
    needs_user: bool  # only the user can fix it (failed rather than backoff)
    was_healthy: bool  # it had been running


@dataclass(frozen=True)
class View:
    """One tunnel's desired and observed state, as plain values."""

    wanted: bool  # desired running
    owner: Owner = Owner.ME
    problem: str | None = None  # precondition_error (only when wanted)
    host_key_block: str | None = None  # its server's key changed (only when wanted)
    tracked: bool = False  # a process of ours
    alive: bool = False  # the tracked process still runs
    healthy: bool = False  # the tracked process's forward was seen working
    generation_matches: bool = True  # the tracked process runs the current configuration
    checked: bool = False  # checked in this pass and not up yet
    start_deadline_passed: bool = False  # counted from the first check, not from the spawn
    start_limit: int = 0  # seconds, for the message
    groups: int = 0  # live process groups of this tunnel found on the machine (untracked)
    strays: int = 0  # groups found beside the tracked one
    leftovers: int = 0  # any processes found while nothing is tracked
    exit: Exit | None = None  # reaped in this pass
    auto_restart: bool = True
    backoff_remaining: float = 0.0  # seconds until a retry is due
    held: bool = False  # tunnels.retries.held
    restart: bool = False  # a start now counts as a restart
    start_slot: bool = True  # the pass may start one more (WORKER_START_BATCH, WORKER_MAX_STARTUPS)
    interactive: bool = False  # runs as an ssh master whose login a person answers
    login_over: bool = False  # interactive: this generation's login was made already (no new start request)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    needs_user: bool = False  # for FAIL
    restart: bool = False  # for START and QUEUE


def decide(view: View) -> Decision:
    """The next step for one tunnel (see ``Action``)."""
    return _ownership(view) or _processes(view) or _exited(view) or _desired(view) or _tracked(view) or _start(view)


def _ownership(view: View) -> Decision | None:
    if view.owner == Owner.PEER:
        return Decision(Action.LEAVE, "a live node runs this tunnel")
    if view.owner == Owner.FREE:
        return Decision(Action.CLAIM, "no live node runs this tunnel")
    return None


def _processes(view: View) -> Decision | None:
    if not view.tracked and view.groups:
        return Decision(Action.ADOPT, "its process runs without a worker")
    if view.tracked and view.strays:
        return Decision(Action.STOP_STRAYS, "duplicate process of the tunnel")
    if view.tracked and not view.alive:
        return Decision(Action.REAP, "its process exited")
    if not view.tracked and view.leftovers and view.exit is None:
        return Decision(Action.STOP_LEFTOVERS, "leftover processes of a tunnel that is not running")
    return None


def _exited(view: View) -> Decision | None:
    """After a reaped exit of a tunnel that should run (one that should not is settled as usual)."""
    if view.exit is None or not view.wanted:
        return None
    exit_ = view.exit
    if view.interactive:  # never restarted: that would need the secret again (or lock the account)
        if exit_.was_healthy:
            return Decision(Action.NEEDS_AUTH, f"ssh master ended ({exit_.detail}): start it again and log in")
        return Decision(Action.LOGIN_FAILED, exit_.detail, needs_user=True)
    if not view.auto_restart:
        return Decision(
            Action.DISABLE,
            f"the tunnel's process exited ({exit_.detail}); auto restart is off, so it was not restarted",
        )
    if exit_.was_healthy and not view.host_key_block:
        reason = f"process exited ({exit_.detail}); restarted"
        if not view.start_slot:
            return Decision(Action.QUEUE, reason, restart=True)
        return Decision(Action.RESTART, reason, restart=True)
    return Decision(Action.FAIL, exit_.detail, needs_user=exit_.needs_user)


def _desired(view: View) -> Decision | None:
    if view.problem:
        # Only a configuration change fixes it: checked every pass, no retries, no back-off.
        return Decision(Action.KEEP_FAILED, view.problem)
    if view.host_key_block:
        return Decision(Action.KEEP_FAILED, view.host_key_block)
    if not view.wanted:
        return Decision(Action.STOP, "stop requested") if view.tracked else Decision(Action.SETTLE, "not wanted")
    if view.tracked and not view.generation_matches:
        return Decision(Action.REPLACE, "configuration changed")
    return None


def _tracked(view: View) -> Decision | None:
    if not view.tracked:
        return None
    if not view.checked:
        return Decision(Action.CHECK, "running" if view.healthy else "starting")
    if view.start_deadline_passed:
        if view.interactive:
            return Decision(
                Action.LOGIN_FAILED, f"the login did not complete within {view.start_limit} seconds (see its log)"
            )
        return Decision(Action.FAIL, f"the tunnel did not come up within {view.start_limit} seconds (see its log)")
    return Decision(Action.WAIT_UP, "starting")


def _start(view: View) -> Decision:
    if view.interactive and view.login_over:
        return Decision(Action.NEEDS_AUTH, GONE_MASTER)
    if view.backoff_remaining > 0:
        return Decision(Action.WAIT_BACKOFF, f"retry in {view.backoff_remaining:.1f}s")
    if view.held:
        return Decision(Action.HOLD, "port clashes gave up")
    if not view.start_slot:
        return Decision(Action.QUEUE, "waiting for a start slot", restart=view.restart)
    return Decision(Action.START, "restart" if view.restart else "start", restart=view.restart)
