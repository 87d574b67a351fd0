"""The worker's decision for one tunnel, over a table of states (no processes, no database).

One row per branch of the pass: ownership, processes found, exits, desired
state, checks and the start deadline, back-off, holds and start slots.
"""

from __future__ import annotations

import pytest

from tunnels.worker.decide import GONE_MASTER, Action, Decision, Exit, Owner, View, decide

RUNNING = dict(wanted=True, tracked=True, alive=True, healthy=True)
STARTING = dict(wanted=True, tracked=True, alive=True, healthy=False)
CRASH = Exit(detail="exit status 255", needs_user=False, was_healthy=True)
EARLY = Exit(detail="connection refused: nothing accepts SSH connections at h", needs_user=False, was_healthy=False)
REFUSED_KEY = Exit(detail="permission denied (publickey): …", needs_user=True, was_healthy=False)
CHANGED = "host key of h changed"
LOGIN = dict(interactive=True)  # an ssh master whose login a person answers
DENIED = Exit(detail="permission denied: wrong password", needs_user=True, was_healthy=False)
KILLED = Exit(detail="killed by SIGKILL", needs_user=False, was_healthy=True)


def row(expected: Decision | Action, case_id: str, **view):
    decision = expected if isinstance(expected, Decision) else None
    action = expected.action if decision else expected
    return pytest.param(View(**view), action, decision, id=case_id)


CASES = [
    # --- whose tunnel --------------------------------------------------------------------
    row(Action.LEAVE, "a live peer runs it", wanted=True, owner=Owner.PEER),
    row(Action.LEAVE, "a live peer runs it even with our copy", owner=Owner.PEER, **RUNNING),
    row(Action.CLAIM, "free and wanted: claim first", wanted=True, owner=Owner.FREE),
    row(Action.CLAIM, "free and stopped (a lost node's leftover state)", wanted=False, owner=Owner.FREE),
    # --- processes found by the scan ----------------------------------------------------------
    row(Action.ADOPT, "untracked live process: adopt", wanted=True, groups=1),
    row(Action.ADOPT, "adopt even when not wanted (then stopped)", wanted=False, groups=1),
    row(Action.ADOPT, "adopt before a precondition problem", wanted=True, groups=1, problem="no key"),
    row(Action.STOP_STRAYS, "a second group beside ours", strays=1, **RUNNING),
    row(Action.STOP_STRAYS, "strays before an exit", strays=1, **{**RUNNING, "alive": False}),
    row(Action.STOP_LEFTOVERS, "orphan ssh of a stopped tunnel", wanted=False, leftovers=1),
    row(Action.STOP_LEFTOVERS, "orphan ssh of a wanted tunnel", wanted=True, leftovers=1),
    # --- exits -------------------------------------------------------------------------------
    row(Action.REAP, "tracked process exited", **{**RUNNING, "alive": False}),
    row(Action.REAP, "exited while not wanted", **{**RUNNING, "alive": False, "wanted": False}),
    row(
        Decision(Action.RESTART, "process exited (exit status 255); restarted", restart=True),
        "crash after running: restart at once",
        wanted=True,
        exit=CRASH,
    ),
    row(
        Decision(Action.QUEUE, "process exited (exit status 255); restarted", restart=True),
        "crash after running, no start slot: queued as a restart",
        wanted=True,
        exit=CRASH,
        start_slot=False,
    ),
    row(
        Decision(Action.FAIL, CRASH.detail, needs_user=False),
        "crash after running, host key changed: fail",
        wanted=True,
        exit=CRASH,
        host_key_block=CHANGED,
    ),
    row(
        Decision(Action.FAIL, EARLY.detail, needs_user=False),
        "exit before it ever ran: fail and back off",
        wanted=True,
        exit=EARLY,
    ),
    row(
        Decision(Action.FAIL, REFUSED_KEY.detail, needs_user=True),
        "exit the user must fix",
        wanted=True,
        exit=REFUSED_KEY,
    ),
    row(
        Decision(
            Action.DISABLE,
            "the tunnel's process exited (exit status 255); auto restart is off, so it was not restarted",
        ),
        "exit with auto restart off",
        wanted=True,
        exit=CRASH,
        auto_restart=False,
    ),
    row(Action.SETTLE, "exit of a tunnel no longer wanted: settle", wanted=False, exit=CRASH),
    row(Action.SETTLE, "leftovers were stopped with the reaped exit", wanted=False, exit=CRASH, leftovers=1),
    row(
        Action.RESTART, "exit beats a precondition problem (as before the split)", wanted=True, exit=CRASH, problem="x"
    ),
    # --- desired state and preconditions ---------------------------------------------------------------
    row(Decision(Action.KEEP_FAILED, "no key"), "precondition problem, nothing running", wanted=True, problem="no key"),
    row(Decision(Action.KEEP_FAILED, "no key"), "precondition problem stops our process", problem="no key", **RUNNING),
    row(Decision(Action.KEEP_FAILED, CHANGED), "server's host key changed", wanted=True, host_key_block=CHANGED),
    row(Decision(Action.KEEP_FAILED, "x"), "problem before the host key", wanted=True, problem="x", host_key_block="y"),
    row(Decision(Action.STOP, "stop requested"), "stop requested", **{**RUNNING, "wanted": False}),
    row(Action.STOP, "stop requested while starting", **{**STARTING, "wanted": False}),
    row(Action.SETTLE, "not wanted, nothing running", wanted=False),
    row(Action.SETTLE, "not wanted, back-off pending: settle clears it", wanted=False, backoff_remaining=5.0),
    row(Action.REPLACE, "new configuration", generation_matches=False, **RUNNING),
    row(Action.REPLACE, "new configuration while starting", generation_matches=False, **STARTING),
    # --- a tracked process: checks and the start deadline -----------------------------------------------
    row(Decision(Action.CHECK, "running"), "running: check (log lines at the resync)", **RUNNING),
    row(Decision(Action.CHECK, "starting"), "starting: check", **STARTING),
    row(
        Action.CHECK,
        "deadline passed but not checked yet: a late forward still counts",
        start_deadline_passed=True,
        **STARTING,
    ),  # fmt: skip
    row(Action.WAIT_UP, "checked, not up, within the deadline", checked=True, **STARTING),
    row(
        Decision(Action.FAIL, "the tunnel did not come up within 15 seconds (see its log)"),
        "checked, not up, deadline passed",
        checked=True,
        start_deadline_passed=True,
        start_limit=15,
        **STARTING,
    ),
    row(Action.CHECK, "a tracked tunnel is checked even in back-off", backoff_remaining=3.0, **STARTING),
    # --- starting -------------------------------------------------------------------------------------------
    row(Decision(Action.START, "start"), "wanted, nothing running: start", wanted=True),
    row(
        Decision(Action.START, "restart", restart=True),
        "after failures: counts as a restart",
        wanted=True,
        restart=True,
    ),  # fmt: skip
    row(Action.WAIT_BACKOFF, "back-off not over", wanted=True, backoff_remaining=0.5),
    row(Action.WAIT_BACKOFF, "back-off before the start slot", wanted=True, backoff_remaining=0.5, start_slot=False),
    row(Action.WAIT_BACKOFF, "back-off before a hold", wanted=True, backoff_remaining=0.5, held=True),
    row(Action.HOLD, "port clashes gave up", wanted=True, held=True),
    row(Action.HOLD, "held, even without a start slot", wanted=True, held=True, start_slot=False),
    row(Decision(Action.QUEUE, "waiting for a start slot"), "no start slot: queued", wanted=True, start_slot=False),
    row(
        Decision(Action.QUEUE, "waiting for a start slot", restart=True),
        "queued restart",
        wanted=True,
        start_slot=False,
        restart=True,
    ),  # fmt: skip
    # --- interactive tunnels: never retried, never restarted -----------------------------------------------
    row(Decision(Action.START, "start"), "interactive, a new start request: a new login", wanted=True, **LOGIN),
    row(
        Decision(Action.NEEDS_AUTH, GONE_MASTER),
        "interactive, this generation's login ended and no master is here (restart, lost node)",
        wanted=True,
        login_over=True,
        **LOGIN,
    ),
    row(
        Decision(Action.NEEDS_AUTH, GONE_MASTER),
        "interactive login over beats a back-off and a start slot",
        wanted=True,
        login_over=True,
        backoff_remaining=3.0,
        start_slot=False,
        **LOGIN,
    ),
    row(Action.ADOPT, "interactive master found after a worker restart: adopt", wanted=True, groups=1, **LOGIN),
    row(
        Decision(Action.LOGIN_FAILED, DENIED.detail, needs_user=True),
        "interactive, wrong answer: login failed, never retried",
        wanted=True,
        exit=DENIED,
        **LOGIN,
    ),
    row(
        Decision(Action.LOGIN_FAILED, EARLY.detail, needs_user=True),
        "interactive, server unreachable: login failed too (a retry would need the secret again)",
        wanted=True,
        exit=EARLY,
        **LOGIN,
    ),
    row(
        Decision(Action.NEEDS_AUTH, "ssh master ended (killed by SIGKILL): start it again and log in"),
        "interactive master killed after it ran: needs_auth, not restarted",
        wanted=True,
        exit=KILLED,
        **LOGIN,
    ),
    row(
        Action.NEEDS_AUTH,
        "interactive master ended with auto restart off: needs_auth all the same",
        wanted=True,
        exit=KILLED,
        auto_restart=False,
        **LOGIN,
    ),
    row(Action.SETTLE, "interactive master ended after a stop request: settle", wanted=False, exit=KILLED, **LOGIN),
    row(Action.CHECK, "interactive, waiting for an answer: checked", **LOGIN, **STARTING),
    row(
        Decision(Action.LOGIN_FAILED, "the login did not complete within 8 seconds (see its log)"),
        "interactive, checked, login not through by the deadline",
        checked=True,
        start_deadline_passed=True,
        start_limit=8,
        **LOGIN,
        **STARTING,
    ),
    row(Action.STOP, "interactive, stop requested while a prompt waits", **{**STARTING, "wanted": False}, **LOGIN),
    row(Action.REPLACE, "interactive, new configuration: a new login", generation_matches=False, **LOGIN, **RUNNING),
]


@pytest.mark.parametrize("view,action,decision", CASES)
def test_decide(view: View, action: Action, decision: Decision | None):
    result = decide(view)
    assert result.action == action, result
    if decision is not None:
        assert result == decision


def test_every_action_has_a_case_and_a_handler():
    from tunnels.worker.acting import Acting

    covered = {param.values[1] for param in CASES}
    assert covered == set(Action)
    assert all(hasattr(Acting, f"_do_{action.name.lower()}") for action in Action)


def test_a_view_is_frozen():
    with pytest.raises(AttributeError):
        View(wanted=True).wanted = False  # type: ignore[misc]
