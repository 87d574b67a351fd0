"""The worker's run loop: passes of the reconciler until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import time

from django.db import close_old_connections

from tunnels import processes
from tunnels.worker.reconciler import Reconciler

logger = logging.getLogger("tunnelsite.worker")
BUSY_INTERVAL = 0.05


class Loop:
    def __init__(self, node: str, interval: float, *, stop_on_exit: bool = False) -> None:
        self.node = node
        self.interval = interval
        self.stop_on_exit = stop_on_exit
        self.stopping = False
        processes.become_subreaper()
        self.reconciler = Reconciler(node, reap_orphans=True)

    def once(self) -> None:
        """--once: one full pass, then wait for connection tests it started."""
        self.reconciler.reconcile_once(full=True)
        self.reconciler.preflights.shutdown(wait=True)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        logger.info("worker %s started (interval %.2fs)", self.node, self.interval)
        reconciler = self.reconciler
        while not self.stopping:
            try:
                close_old_connections()  # a connection the database dropped is replaced, not reused
                reconciler.reconcile_once()
            except Exception:  # e.g. the database went away: log, wait, try again
                logger.exception("worker pass failed")
            # While a tunnel is starting, check its forward every 50 ms: "running" shows up sooner.
            self.sleep(min(self.interval, BUSY_INTERVAL) if reconciler.busy else self.interval)
        self.shutdown()

    def shutdown(self) -> None:
        reconciler = self.reconciler
        reconciler.preflights.shutdown()
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
        # Only set a flag: the loop finishes its pass and exits.
        self.stopping = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
