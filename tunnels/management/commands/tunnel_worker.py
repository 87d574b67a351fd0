"""Placeholder until the reconciler lands: keeps running so bin/run has a worker slot."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the tunnel reconciler (not implemented yet: idles)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true")
        parser.add_argument("--node", default=None)
        parser.add_argument("--interval", type=float, default=None)
        parser.add_argument("--stop-on-exit", action="store_true")

    def handle(self, *args, **options) -> None:
        self.stderr.write("tunnel_worker: the reconciler is not implemented yet; idling")
        if options["once"]:
            return
        while True:
            time.sleep(1)
