"""Interactive tunnels: starting an ssh master for a login, and how its login ends.

The master is supervised like an autossh process (one tracked pid, pidfd exit watching, the log,
sessions); what differs is here. Its prompts go through the askpass broker (tunnels.worker.askpass).
A login that fails (wrong answer: "permission denied"; nobody answered in time) leaves the tunnel
``failed`` with the reason, exit reason ``auth_failed`` and desired state stopped: never retried, a
retry could lock the account. A master that ends after it ran (killed, the network) leaves it
``needs_auth``, desired stopped: never restarted, that would need the secret again. Only a new
start request (a new generation) logs in again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.utils import timezone

from tunnels import processes, prompts
from tunnels.models import Desired, ExitReason, Status, Tunnel
from tunnels.ssh import askpass as askpass_helper
from tunnels.ssh import control, control_path, master_command
from tunnels.worker.askpass import Attempt, Broker
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

CONTROL_CHECK_SECONDS = 60.0  # ``ssh -O check`` of a running master at most this often
ERASE_SECONDS = 1.0  # stale answers are blanked at most this often
LOGIN_REFUSED = "permission denied: the SSH server did not accept the login (wrong password or code)"
GONE_WORDS = "its ssh master is gone (a new worker or node cannot log in again without you): start it again and log in"


def login_refused(words: str) -> bool:
    """The server refused the login, or nobody answered: the session ends as ``auth_failed``."""
    return words == LOGIN_REFUSED or words.startswith("login timed out")


@dataclass
class MasterStart:
    command: object
    attempt: Attempt


class Logins:
    """Reconciler mixin: the interactive tunnels' masters and the end of their logins."""

    _broker: Broker | None = None
    _askpass_path = None
    _next_erase = 0.0

    def askpass_broker(self) -> Broker:
        """The node's broker, started with the first interactive tunnel (and its helper installed)."""
        if self._broker is None:
            self._askpass_path = askpass_helper.install()
            self._broker = Broker(self.node).start()
        return self._broker

    def close_broker(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None

    def prepare_master(self, tunnel: Tunnel, address: str | None) -> MasterStart:
        """A new login attempt of ``tunnel`` and the master's command (raises what preparing a key raises)."""
        broker = self.askpass_broker()
        attempt = broker.register(tunnel.pk, f"{tunnel.generation}-{timezone.now():%H%M%S%f}")
        try:
            command = master_command(
                tunnel,
                node=self.node,
                agent=self.agent,
                askpass=self._askpass_path,
                broker=broker.path,
                nonce=attempt.nonce,
                address=address,
            )
        except Exception:
            broker.forget(attempt.nonce)
            raise
        prompts.begin(tunnel.pk, attempt.attempt)  # keeps the answers given with the start
        return MasterStart(command, attempt)

    def master_spawned(self, tracked: Tracked, attempt: Attempt, tunnel: Tunnel) -> None:
        tracked.master = True
        tracked.control = control_path(tunnel)
        tracked.login = attempt
        self.askpass_broker().spawned(attempt.nonce, tracked.pid, tracked.create_time)

    # --- how a login ends --------------------------------------------------------

    def login_over(self, tracked: Tracked) -> None:
        """Nothing of the login stays: the pending question, answers, the broker's attempt."""
        if not tracked.master:
            return
        login, tracked.login = tracked.login, None
        if login is None:
            prompts.end(tracked.tunnel_id)  # adopted: whatever is left of its login
            return
        if self._broker is not None:
            self._broker.forget(login.nonce)
        prompts.end(tracked.tunnel_id, login.attempt)

    def login_succeeded(self, tunnel: Tunnel, tracked: Tracked) -> None:
        self.login_over(tracked)
        tracked.next_control_check = time.monotonic() + CONTROL_CHECK_SECONDS

    def login_words(self, tracked: Tracked | None, reason: str) -> str:
        """Why a login failed, for the owner: the broker's own reason (a prompt nobody answered) first."""
        login = tracked.login if tracked is not None else None
        if login is not None and login.outcome:
            return login.outcome
        if reason.startswith("permission denied ("):
            return LOGIN_REFUSED
        return reason

    def login_failed(self, tunnel: Tunnel, tracked: Tracked | None, reason: str) -> None:
        """The login did not get through: failed, desired stopped, never retried."""
        reason = self.login_words(tracked, reason)
        if tracked is not None:
            exit_reason = ExitReason.AUTH_FAILED if login_refused(reason) else ExitReason.FAILED
            self.stop(tunnel, tracked, exit_reason, reason, settle=False)  # its login ends with it
        else:
            prompts.end(tunnel.pk)
        self._update(
            tunnel,
            status=Status.FAILED,
            last_error=reason,
            consecutive_failures=0,
            backoff_until=None,
            pid=None,
            process_create_time=None,
            **_stopped_by_worker(),
        )
        logger.info("tunnel %s (%s) login failed, not retried: %s", tunnel.name, tunnel.uuid, reason)

    def needs_auth(self, tunnel: Tunnel, tracked: Tracked | None, reason: str) -> None:
        """The master is gone after it ran (or cannot be had here): a person must log in again."""
        if tracked is not None:
            self.stop(tunnel, tracked, ExitReason.CRASHED, reason, settle=False)  # its login ends with it
        else:
            prompts.end(tunnel.pk)
        self._update(
            tunnel,
            status=Status.NEEDS_AUTH,
            last_error=reason,
            backoff_until=None,
            pid=None,
            process_create_time=None,
            **_stopped_by_worker(),
        )
        logger.info("tunnel %s (%s) needs a new login: %s", tunnel.name, tunnel.uuid, reason)

    # --- supervision through the control socket ----------------------------------------

    def master_answers(self, tracked: Tracked, *, force: bool = False) -> bool:
        """``ssh -O check`` of a running master, at most once a minute (``force``: now, at adoption)."""
        now = time.monotonic()
        if not force and now < tracked.next_control_check:
            return True
        tracked.next_control_check = now + CONTROL_CHECK_SECONDS
        return control(tracked.control, "check")

    def exit_master(self, tracked: Tracked) -> None:
        """``ssh -O exit`` first (a clean end of the connection); the group kill follows anyway."""
        if tracked.master and tracked.control is not None and tracked.alive():
            if control(tracked.control, "exit"):
                logger.info(
                    "tunnel %s: ssh master pid %s asked to exit through its control socket",
                    tracked.tunnel_id,
                    tracked.pid,
                )

    def check_masters(self, tunnels: list[Tunnel]) -> None:
        """At the resync: every running master still answers on its control socket."""
        for tunnel in tunnels:
            tracked = self.tracked.get(str(tunnel.uuid))
            if tracked is None or not tracked.master or not tracked.healthy or tunnel.node != self.node:
                continue
            if not self.master_answers(tracked):
                self.needs_auth(tunnel, tracked, "ssh master stopped answering on its control socket: start it again")

    def erase_stale_prompts(self) -> None:
        now = time.monotonic()
        if now < self._next_erase:
            return
        self._next_erase = now + ERASE_SECONDS
        prompts.erase_stale()

    def adopt_master(self, tunnel: Tunnel, tracked: Tracked) -> bool:
        """A master found on this host after a worker restart: adopted if it answers; False otherwise."""
        tracked.master = True
        tracked.control = control_path(tunnel)
        if self.master_answers(tracked, force=True):
            return True
        processes.stop_group(tracked.pgid, tracked.pids(), reap_orphans=self.reap_orphans)
        return False


def _stopped_by_worker() -> dict:
    return {"desired_state": Desired.STOPPED, "desired_changed_at": timezone.now(), "desired_by": None}
