"""What the worker remembers about each tunnel process it runs."""

from __future__ import annotations

import subprocess
import time
import uuid as uuid_mod
from dataclasses import dataclass, field

from tunnels import processes


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
    authenticated_at: float | None = None
    ssh_pids: list[int] = field(default_factory=list)
    seen: str = ""  # recent log text, for the -R "Authenticated to" check

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.same_process(self.pid, self.create_time)

    def pids(self) -> list[tuple[int, float | None]]:
        return [(self.pid, self.create_time), *((pid, None) for pid in self.ssh_pids)]
