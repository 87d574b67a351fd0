"""Connection tests, the request side: used by the REST API and the admin.

The web process only writes a pending ``ConnectionTest`` and bumps the
change marker; a worker claims it and runs ssh (``tunnels.preflight_runner``).
One test per tunnel is in flight at a time: asking again while one is pending
or running returns that one.
"""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import QuerySet

from tunnels import services, waiting
from tunnels.models import ConnectionTest, TestState, Tunnel

POLL_INTERVAL = 0.1
# The steps a test reports, in order; "worker": the worker running it stopped (or broke) before a result.
STEPS = ("resolve", "connect", "host_key", "auth", "forward", "worker")
INTERACTIVE_REFUSAL = (
    "interactive tunnels cannot be tested: a test logs in unattended, and their login needs a person to answer "
    "ssh's prompts (start the tunnel and answer its prompt instead, or set interactive to false and use key "
    "authentication)"
)
IN_FLIGHT = (TestState.PENDING, TestState.RUNNING)


def request_test(tunnel: Tunnel, actor: services.Actor = services.SYSTEM) -> ConnectionTest:
    """A pending test of ``tunnel`` (or the one already in flight); the workers are told at once."""
    if tunnel.interactive:
        raise services.NotRunnable(INTERACTIVE_REFUSAL)
    with transaction.atomic():
        # Serialise requests per tunnel (SQLite serialises writes anyway) so two
        # requests at once cannot both start a test.
        Tunnel.objects.select_for_update().filter(pk=tunnel.pk).values_list("pk", flat=True).first()
        test = ConnectionTest.objects.filter(tunnel=tunnel, state__in=IN_FLIGHT).order_by("created_at").first()
        if test is not None:
            return test
        requester = actor.user if getattr(actor.user, "pk", None) else None
        test = ConnectionTest.objects.create(tunnel=tunnel, owner_id=tunnel.owner_id, requested_by=requester)
    services.bump_marker()
    return test


def request_tests(tunnels, actor: services.Actor = services.SYSTEM) -> tuple[list[ConnectionTest], list[Tunnel]]:
    """Tests of several tunnels (the admin action); interactive ones are skipped and returned apart."""
    tests, skipped = [], []
    for tunnel in tunnels:
        if tunnel.interactive:
            skipped.append(tunnel)
        else:
            tests.append(request_test(tunnel, actor))
    return tests, skipped


def wait_for_result(test: ConnectionTest, timeout: float) -> ConnectionTest:
    """Re-read ``test`` until it is done, ``timeout`` seconds pass, or no worker is alive to run it.

    Shares the waiting slots of start/stop (``tunnels.waiting``): with none free, it looks once."""
    if timeout <= 0:
        return _poll_result(test, 0.0)
    with waiting.SLOTS.slot() as held:
        return _poll_result(test, timeout if held else 0.0)


def _poll_result(test: ConnectionTest, timeout: float) -> ConnectionTest:
    started = time.monotonic()
    deadline = started + max(0.0, timeout)
    while True:
        test.refresh_from_db()
        now = time.monotonic()
        if test.state == TestState.DONE or now >= deadline:
            return test
        # The same rule as start/stop waits: a briefly silent worker is still waited for.
        if test.state == TestState.PENDING and services.no_worker(services.newest_heartbeat(), now - started, timeout):
            return test
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def tests_of(tunnel: Tunnel) -> QuerySet[ConnectionTest]:
    """The tunnel's tests, newest first."""
    return ConnectionTest.objects.filter(tunnel=tunnel).select_related("tunnel").order_by("-created_at", "-pk")
