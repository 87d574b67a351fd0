"""Process lifecycle: start, adopt, stop and the exits of tunnel processes."""

from __future__ import annotations

import logging

from django.db.models import F
from django.utils import timezone

from tunnels import netpolicy, processes
from tunnels.agent import AgentError, KeyUnusable
from tunnels.models import Desired, ExitReason, Status, Tunnel, TunnelSession
from tunnels.ssh import NoKey, command_for
from tunnels.worker.decide import Exit
from tunnels.worker.logins import login_refused
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")


class Lifecycle:
    """Reconciler mixin: the only code that starts or stops tunnel processes (through tunnels.processes)."""

    def _stop_strays(self, tunnel: Tunnel, tracked: Tracked, found: list[processes.Found]) -> None:
        """A second autossh for the same tunnel (e.g. from another node on this host) must go."""
        strays = [f for f in found if not f.orphan and f.pid != tracked.pid]
        if strays:
            self._stop_found(strays, f"duplicate process of tunnel {tunnel.name}")

    def _stop_found(self, found: list[processes.Found], why: str) -> None:
        for item in found:
            logger.info("stopping pid %s (%s): %s", item.pid, item.uuid, why)
        groups = [
            processes.Group(item.pgid, [(item.pid, item.create_time), *((pid, None) for pid in item.ssh_pids)])
            for item in found
        ]
        if groups:
            processes.stop_groups(groups, reap_orphans=self.reap_orphans)

    # --- starting, checking, stopping -----------------------------------------

    def start(self, tunnel: Tunnel, *, restart: bool = False) -> Tracked | None:
        self.host_files.sync(tunnel.owner_id)  # the owner's known_hosts, as the database trusts them
        login = None
        try:
            # Resolved here, at connect time, and ssh pinned to it: DNS cannot swap the address afterwards.
            address = netpolicy.resolve_destination(tunnel)
            if tunnel.interactive:
                login = self.prepare_master(tunnel, address)  # an ssh master and a login attempt
                command = login.command
            else:
                command = command_for(tunnel, node=self.node, agent=self.agent, address=address)
        except (KeyUnusable, AgentError, NoKey, netpolicy.DestinationRefused) as exc:
            self.fail(tunnel, None, str(exc), True)
            return None
        popen, offset = processes.start(command.argv, command.env, tunnel.log_path, command.display)
        tracked = Tracked(
            tunnel_id=tunnel.pk,
            pid=popen.pid,
            create_time=processes.create_time(popen.pid),
            pgid=popen.pid,  # start_new_session: the leader of its own group
            generation=tunnel.generation,
            offset=offset,
            popen=popen,
            log_whole=True,
        )
        if login is not None:
            self.master_spawned(tracked, login.attempt, tunnel)
        self.tracked[str(tunnel.uuid)] = tracked
        self.watch_tracked(tracked)
        now = timezone.now()
        values = dict(
            status=Status.STARTING,
            pid=popen.pid,
            process_create_time=tracked.create_time,
            running_generation=tunnel.generation,
            started_at=now,
        )
        if restart:
            values["restart_count"] = F("restart_count") + 1
        if tunnel.running_generation != tunnel.generation:
            values["consecutive_failures"] = 0  # a new configuration: failures (and port clashes) count afresh
        if not self._update(tunnel, **values):
            self.stop(tunnel, tracked, ExitReason.HANDED_OVER, "another node claimed the tunnel", record=False)
            return None
        tracked.session_id = self._open_session(tunnel, popen.pid, now).id
        logger.info("started tunnel %s (%s) pid %s: %s", tunnel.name, tunnel.uuid, popen.pid, command.display)
        return tracked

    def adopt(self, tunnel: Tunnel, found: processes.Found) -> Tracked | None:
        """Take over a live process (after a worker restart or from a lost node on this host).

        A master is adopted once it answers ``ssh -O check``; one that does not (it was still logging
        in when its worker died) is stopped, and the tunnel needs a new login."""
        tracked = Tracked(
            tunnel_id=tunnel.pk,
            pid=found.pid,
            create_time=found.create_time,
            pgid=found.pgid,
            generation=found.generation if found.generation is not None else tunnel.running_generation,
            offset=0,
            ssh_pids=found.ssh_pids,
        )
        if found.master and not self.adopt_master(tunnel, tracked):
            self.needs_auth(tunnel, None, "ssh master found without a working control socket: start it again")
            return None
        self.read_back(tunnel, tracked)  # its state is read from its log and port, not assumed
        self.tracked[str(tunnel.uuid)] = tracked
        self.watch_tracked(tracked)
        session_id = self._open_session_of(tunnel, found.pid)
        if session_id is None:
            session_id = self._open_session(tunnel, found.pid, timezone.now()).id
        tracked.session_id = session_id
        if tunnel.pid != found.pid or tunnel.process_create_time != found.create_time:
            self._update(tunnel, pid=found.pid, process_create_time=found.create_time)
        logger.info("adopted tunnel %s (%s) pid %s", tunnel.name, tunnel.uuid, found.pid)
        return tracked

    def _open_session_of(self, tunnel: Tunnel, pid: int):
        """The id of the session still open for this process (read for the whole pass by ``prefetch_sessions``)."""
        if self._adoptable is not None:
            return self._adoptable.get((tunnel.pk, pid))
        return TunnelSession.objects.filter(tunnel=tunnel, ended_at=None, pid=pid).values_list("id", flat=True).first()

    def prefetch_sessions(self, found: dict[str, list[processes.Found]]) -> None:
        """One query for the open sessions of every process the pass may adopt (a restarted worker adopts all)."""
        untracked = [key for key in found if key not in self.tracked]
        self._adoptable = {}
        if untracked:
            rows = TunnelSession.objects.filter(tunnel_uuid__in=untracked, ended_at=None)
            self._adoptable = {(t, pid): pk for t, pid, pk in rows.values_list("tunnel_id", "pid", "id")}

    def reap_exit(self, tunnel: Tunnel, tracked: Tracked, found: list[processes.Found]) -> Exit:
        """The autossh process died: collect what it said, clear what it left, end its session."""
        text, tracked.offset = processes.read_log(tunnel.log_path, tracked.offset)
        failure = self._explain(tunnel, tracked.seen + text) if (text or tracked.seen) else None
        detail = failure[0] if failure else self.exit_words(tracked)
        # A killed autossh leaves its ssh child behind, still holding the port.
        self._stop_found([f for f in found if f.orphan], "ssh left behind by a dead autossh")
        processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
        self.unwatch_tracked(tracked)
        ran = tracked.healthy or tracked.reconnecting is not None  # a reconnecting tunnel had been running
        reason = ExitReason.CRASHED if ran else ExitReason.FAILED
        if tracked.master and not ran:
            detail = self.login_words(tracked, detail)
            if login_refused(detail):
                reason = ExitReason.AUTH_FAILED
        self.login_over(tracked)
        # Written after the restart (with the time of the exit): database trouble must not lengthen the outage.
        self._defer_close(tracked, reason, detail)
        self.tracked.pop(str(tunnel.uuid), None)
        logger.info("tunnel %s (%s) pid %s exited: %s", tunnel.name, tunnel.uuid, tracked.pid, detail)
        return Exit(detail=detail, needs_user=failure[1] if failure else False, was_healthy=ran)

    def disable(self, tunnel: Tunnel, message: str) -> None:
        """Exited with auto restart off: stopped, with the reason, and desired stopped too."""
        # One write: a reader never sees the tunnel stopped but still wanted (or the other way round).
        self._update(
            tunnel,
            status=Status.STOPPED,
            pid=None,
            process_create_time=None,
            last_error=message,
            desired_state=Desired.STOPPED,
            desired_changed_at=timezone.now(),
            desired_by=None,
        )
