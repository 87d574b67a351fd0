"""Shared resources of the tunnels a node runs: the ssh-agent's keys, log sizes, changed host keys."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
from pathlib import Path

from tunnels import diskspace, hostkeys, logfiles
from tunnels.agent import AgentError
from tunnels.diskspace import DISK_FULL
from tunnels.models import Desired, Tunnel
from tunnels.worker.decide import precondition_error
from tunnels.worker.health import explain

logger = logging.getLogger("tunnelsite.worker")


# Running logs are held to LOG_MAX_BYTES this often; the per-user cap stays at the resync.
LOG_CHECK_SECONDS = 1.0


class Resources:
    """Reconciler mixin: per-node resources kept in line at the resync."""

    def _sync_agent(self, tunnels: list[Tunnel]) -> None:
        """At the resync: the agent holds exactly the keys of the tunnels this node runs."""
        needed = {
            t.ssh_key_id: t.ssh_key
            for t in tunnels
            if t.ssh_key_id and t.node == self.node and t.desired_state == Desired.RUNNING and not precondition_error(t)
        }
        needed.update(self.preflights.keys_in_use())  # a running connection test's key stays too
        try:
            self.agent.sync(needed.values())
        except (AgentError, OSError, subprocess.SubprocessError):
            logger.exception("could not synchronise the ssh-agent")

    # --- logs (tunnels.logfiles) ------------------------------------------------

    def _bound_logs(self, tunnels: list[Tunnel]) -> None:
        """At the resync (not every pass): rotate the logs this node's processes write and hold
        their owners to the per-user cap. A log overshoots LOG_MAX_BYTES by at most one interval's output."""
        running = {t.log_path: self.tracked[str(t.uuid)] for t in tunnels if str(t.uuid) in self.tracked}
        if not running:
            return
        owners = {t.owner_id for t in tunnels if t.log_path in running}
        by_owner: dict[int, list] = {}
        for owner_id, uuid in Tunnel.objects.filter(owner_id__in=owners).values_list("owner_id", "uuid"):
            by_owner.setdefault(owner_id, []).append(logfiles.path_for(uuid))
        try:
            emptied = logfiles.bound(running, by_owner)
        except OSError as exc:
            self.disk_trouble(exc, "could not rotate the tunnel logs")
            return
        for path in emptied & running.keys():
            running[path].offset = 0  # read what the process writes from now on
            running[path].log_whole = False

    def _tend(self) -> None:
        """Every ``LOG_CHECK_SECONDS``, not only at the resync (and without the database): hold each
        running log to LOG_MAX_BYTES (one stat per running tunnel), so a noisy tunnel cannot fill the
        disk between resyncs. (A dropped connection needs no look here: its ssh's exit is an event.)"""
        now = time.monotonic()
        if now < self._next_log_check:
            return
        self._next_log_check = now + LOG_CHECK_SECONDS
        paths = self._log_files
        for key, tracked in self.tracked.items():
            path = self.log_file(key)
            try:
                if logfiles.rotate(path):
                    tracked.offset = 0
                    tracked.log_whole = False
            except OSError as exc:
                self.disk_trouble(exc, f"could not rotate {Path(path).name}", Path(path))
        if len(paths) > 2 * len(self.tracked) + 64:  # forget the paths of tunnels no longer run here
            self._log_files = {key: path for key, path in paths.items() if key in self.tracked}
        # One statvfs: the disk may fill up from outside (another file, the database) while our
        # own writes still fit, and the operator should hear of it before a tunnel fails on it.
        full = diskspace.is_full()
        if full is not None:
            self.node_problem(DISK_FULL, full)

    def log_file(self, key: str) -> str:
        """The log of tunnel ``key`` as a string, built once (a Path per tunnel per look cost more than a stat)."""
        path = self._log_files.get(key)
        if path is None:
            path = self._log_files[key] = str(logfiles.path_for(key))
        return path

    def disk_trouble(self, exc: OSError, what: str, log: Path | None = None) -> None:
        """A write in the data dir failed. A full disk is the node's problem (WorkerNode.error); a log
        that could not be copied aside is emptied rather than left to grow."""
        if exc.errno != errno.ENOSPC:
            logger.warning("%s: %s", what, exc)
            return
        self.node_problem(DISK_FULL, True)
        if log is not None:
            with contextlib.suppress(OSError):
                logfiles.unlink(logfiles.rotation(log, 1))  # a partial copy: free its space
                os.truncate(log, 0)

    # --- host keys (tunnels.hostkeys) -----------------------------------------

    def _host_key_block(self, tunnel: Tunnel, wanted: bool) -> str | None:
        """The error keeping ``tunnel`` down while its server's key changed (one query per full pass, if any)."""
        if not wanted:
            return None
        if self._changed_hosts is None:
            self._changed_hosts = hostkeys.changed_targets()
        return hostkeys.blocked(wanted, tunnel.owner_id, hostkeys.tunnel_target(tunnel), self._changed_hosts)

    def _explain(self, tunnel: Tunnel, text: str, context: str | None = None) -> tuple[str, bool] | None:
        """``explain``, except that a changed host key (in ``context``, ssh's recent output) is recorded
        and keeps the tunnel down."""
        changed = hostkeys.record_change(tunnel, text if context is None else context)
        if changed is None:
            return explain(text, tunnel)
        if self._changed_hosts is not None:
            self._changed_hosts[(tunnel.owner_id, *hostkeys.tunnel_target(tunnel))] = changed
        return changed, True
