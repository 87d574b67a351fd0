"""How many requests of this web process may wait for the worker at once (``?wait=``).

A waiting request holds a gunicorn thread while it polls the database, so
without a bound a handful of ``?wait=30`` requests hold every thread of every
web process and stall all other users. ``settings.MAX_WAITING`` slots are
shared by all threads of the process; a request that finds none free does not
queue for one, it answers at once as with ``wait=0``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings


class WaitSlots:
    """A process-wide, non-blocking semaphore sized by ``settings.MAX_WAITING``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limit = -1
        self._semaphore = threading.BoundedSemaphore(1)
        self._in_use = 0

    def _current(self) -> threading.BoundedSemaphore:
        # Read the setting on each use so a changed setting (tests, a reload) takes effect;
        # a holder of a slot of the previous semaphore releases that one.
        with self._lock:
            limit = max(int(settings.MAX_WAITING), 0)
            if limit != self._limit:
                self._limit, self._semaphore = limit, threading.BoundedSemaphore(max(limit, 1))
                if limit == 0:
                    self._semaphore.acquire()  # no slot at all
            return self._semaphore

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yields True while holding a slot, False when none was free (then do not wait)."""
        semaphore = self._current()
        if not semaphore.acquire(blocking=False):
            yield False
            return
        with self._lock:
            self._in_use += 1
        try:
            yield True
        finally:
            with self._lock:
                self._in_use -= 1
            semaphore.release()

    @property
    def in_use(self) -> int:
        """Slots held right now in this process (for tests and diagnostics)."""
        return self._in_use


SLOTS = WaitSlots()
