"""The owners' known_hosts files as the worker keeps them: synchronised once between full passes.

``hostkeys.sync_owner`` reads the owner's file, harvests what ssh appended and rewrites the file from
the database: two queries and a file read. Done for every start and every tunnel coming up, it was
a third of the worker's busy time in a start-all of 500 tunnels of one owner (py-spy). Here it runs
once per owner until the next full pass, and again when the file changed meanwhile (ssh appended a
key it trusted on first use). Every change to the database side (a key pinned, accepted or deleted,
tunnels.hostkeys) moves the change marker, and a moved marker makes the next pass a full one; the
resync (a full pass too) also catches a change made some other way.
"""

from __future__ import annotations

import os
import time

from tunnels import hostkeys
from tunnels.models import Tunnel

# A trusted key's last_seen is written at most this often per owner and server.
TOUCH_SECONDS = 60.0

Stat = tuple[int, int, int] | None


class Every:
    """At most once per ``seconds`` per key."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict = {}

    def due(self, key) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        self._last[key] = now
        return True


class HostFiles:
    def __init__(self) -> None:
        self._synced: dict[int, Stat] = {}  # owner -> the file as its last sync left it
        self._touches = Every(TOUCH_SECONDS)

    def forget(self) -> None:
        """At a full pass: the database may have changed, every owner is synchronised again."""
        self._synced.clear()

    def sync(self, owner_id: int) -> None:
        """Before a start: the owner's file says what the database trusts."""
        if owner_id in self._synced and _stat(owner_id) == self._synced[owner_id]:
            return
        before = _stat(owner_id)  # (an append after this differs from it: harvested at the next look)
        written = hostkeys.sync_owner(owner_id)
        self._synced[owner_id] = _stat(owner_id) if written else before

    def seen(self, tunnel: Tunnel) -> None:
        """The tunnel is up: keep a key ssh appended (trust on first use), note when its server's key was seen."""
        owner_id = tunnel.owner_id
        self.sync(owner_id)  # (one stat when ssh appended nothing since)
        target = hostkeys.tunnel_target(tunnel)
        if self._touches.due((owner_id, *target)):
            hostkeys.touch(owner_id, *target)


def _stat(owner_id: int) -> Stat:
    try:
        st = os.stat(hostkeys.path_for(owner_id))
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
