"""The tunnel worker: runs the reconciler until SIGTERM/SIGINT (tunnels.worker.loop)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from tunnels.worker.loop import Loop


class Command(BaseCommand):
    help = (
        "Keep the tunnel processes (autossh, and ssh control masters of interactive tunnels) in line with "
        "the desired state in the database."
    )
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
        node = options["node"] or settings.NODE_NAME
        interval = options["interval"] or settings.WORKER_INTERVAL
        loop = Loop(node, interval, stop_on_exit=options["stop_on_exit"])
        if options["once"]:
            loop.once()
            return
        loop.run()
