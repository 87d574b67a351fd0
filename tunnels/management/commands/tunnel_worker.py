"""The tunnel worker: runs the reconciler until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from tunnels import processes
from tunnels.reconciler import Reconciler

logger = logging.getLogger("tunnelsite.worker")
BUSY_INTERVAL = 0.05


class Command(BaseCommand):
    help = "Keep the autossh tunnel processes in line with the desired state in the database."
    # System checks import every URLconf and the API schema machinery (~18 MB the
    # worker never uses); `manage.py check` and `migrate` run them at deploy time.
    requires_system_checks = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="run one full pass and exit")
        parser.add_argument("--node", default=None, help="this worker's node name (default: TUNNELSITE_NODE)")
        parser.add_argument(
            "--interval", type=float, default=None, help="seconds between passes (default: TUNNELSITE_WORKER_INTERVAL)"
        )
        parser.add_argument(
            "--stop-on-exit",
            action="store_true",
            help="stop this node's tunnels on exit (default: leave them running for the next worker to adopt)",
        )

    def handle(self, *args, **options) -> None:
        self.stopping = False
        node = options["node"] or settings.NODE_NAME
        interval = options["interval"] or settings.WORKER_INTERVAL
        processes.become_subreaper()
        reconciler = Reconciler(node, reap_orphans=True)
        if options["once"]:
            reconciler.reconcile_once(full=True)
            reconciler.preflights.shutdown(wait=True)
            return
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        logger.info("worker %s started (interval %.2fs)", node, interval)
        while not self.stopping:
            try:
                close_old_connections()  # a connection the database dropped is replaced, not reused
                reconciler.reconcile_once()
            except Exception:  # e.g. the database went away: log, wait, try again
                logger.exception("worker pass failed")
            # While a tunnel is starting, check its forward every 50 ms: "running" shows up sooner.
            self.sleep(min(interval, BUSY_INTERVAL) if reconciler.busy else interval)
        reconciler.preflights.shutdown()
        if options["stop_on_exit"]:
            reconciler.stop_all()
            reconciler.agent.stop()  # the keys go with it
        logger.info(
            "worker %s stopped (%d tunnels %s)",
            node,
            len(reconciler.tracked),
            "stopped" if options["stop_on_exit"] else "left running",
        )

    def on_signal(self, signum, frame) -> None:
        # Only set a flag: the loop finishes its pass and exits.
        self.stopping = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
