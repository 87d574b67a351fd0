"""What the worker remembers about each tunnel process it runs."""

from __future__ import annotations

import subprocess
import time
import uuid as uuid_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnels import processes

AUTHENTICATED = "Authenticated to"  # ssh's line (LogLevel VERBOSE) once the server accepted the key


@dataclass
class Tracked:
    """A tunnel process this node runs (started or adopted)."""

    tunnel_id: int
    pid: int
    create_time: float | None
    pgid: int
    generation: int | None
    offset: int  # log position this process's output starts at
    popen: subprocess.Popen | None = None  # None when adopted from an earlier worker
    session_id: uuid_mod.UUID | None = None
    healthy: bool = False
    started: float = field(default_factory=time.monotonic)
    # The start deadline counts from here: the first check after the spawn, when the worker could first
    # look (a pass that spawned many must not eat into the time of the first ones).
    first_check: float | None = None
    authenticated_at: float | None = None
    ssh_pids: list[int] = field(default_factory=list)
    seen: str = ""  # log text of the current connection, for the -R "Authenticated to" check
    # Its log has been read from the process's first line on (started here, never rotated since): a line
    # it did not write yet is really not written.
    log_whole: bool = False
    connection: tuple[int, ...] | None = None  # the ssh pids of the connection last seen working
    reconnecting: float | None = None  # when a drop of a working connection was noticed (monotonic)
    server_back: float | None = None  # when the server of a reconnecting tunnel first answered again
    # An interactive tunnel's ssh master (tunnels.worker.logins) instead of autossh.
    master: bool = False
    control: Path | None = None  # its control socket
    login: Any = None  # its login attempt while it lasts (tunnels.worker.askpass.Attempt)
    next_control_check: float = 0.0  # monotonic time of the next ``ssh -O check``

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.same_process(self.pid, self.create_time)

    @property
    def authenticating(self) -> bool:
        """Spawned, not yet through ssh authentication (what an SSH server's MaxStartups counts).

        A login waiting for a person's answer does not count: it may wait minutes, and must not hold
        up the starts of other tunnels."""
        return not self.healthy and not self.logged_in and not self.waiting_for_answer

    @property
    def logged_in(self) -> bool:
        return AUTHENTICATED in self.seen

    @property
    def waiting_for_answer(self) -> bool:
        """An interactive tunnel's ssh is blocked on a question nobody answered yet."""
        return self.login is not None and self.login.waiting

    def forward_pids(self) -> list[int]:
        """The processes that hold the forward: autossh's ssh children, or the master itself."""
        return [self.pid] if self.master else self.ssh_pids

    def watched(self) -> list[int]:
        """The pids whose exit concerns this tunnel: its autossh and its ssh children."""
        return [self.pid, *self.ssh_pids]

    def pids(self) -> list[tuple[int, float | None]]:
        return [(self.pid, self.create_time), *((pid, None) for pid in self.ssh_pids)]


class TrackedTable(dict):
    """The processes a node runs, by tunnel uuid, and which of them may not be up yet.

    A busy pass and the loop's every wake-up ask for the ones not up; with a thousand running, a look
    at every one of them cost more than the rest of the pass. A tunnel joins the unsettled set when it
    is tracked (started or adopted, not yet up) and when its connection drops (``unsettle``); it
    leaves once it is up or gone.
    """

    def __init__(self) -> None:
        super().__init__()
        self._unsettled: set[str] = set()

    def __setitem__(self, key: str, tracked: Tracked) -> None:
        super().__setitem__(key, tracked)
        self._unsettled.add(key)

    def unsettle(self, key: str) -> None:
        self._unsettled.add(key)

    def unsettled(self) -> list[tuple[str, Tracked]]:
        """The tracked processes not up yet."""
        found = []
        for key in list(self._unsettled):
            tracked = self.get(key)
            if tracked is None or tracked.healthy:
                self._unsettled.discard(key)
            else:
                found.append((key, tracked))
        return found
