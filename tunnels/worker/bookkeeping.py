"""Bookkeeping: claims, observed-state writes, sessions, the heartbeat and the live-node rule."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tunnels.models import Desired, ExitReason, SshKey, Status, Tunnel, TunnelSession, WorkerNode
from tunnels.ssh import redact
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

# SshKey.last_used_at is written at most this often per key.
KEY_TOUCH_SECONDS = 60.0


class Bookkeeping:
    """Reconciler mixin: what the worker writes to the database about tunnels, sessions and itself."""

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        # Several beats per lease, but not a write every pass.
        self._next_heartbeat = now + min(1.0, settings.WORKER_LEASE_SECONDS / 4)
        values = {"last_seen": timezone.now(), "pid": os.getpid(), "hostname": socket.gethostname()}
        if not WorkerNode.objects.filter(name=self.node).update(**values):
            WorkerNode.objects.update_or_create(name=self.node, defaults={**values, "started_at": self._started_at})

    def live_nodes(self) -> set[str]:
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
        return set(WorkerNode.objects.filter(last_seen__gte=cutoff).values_list("name", flat=True)) | {self.node}

    # --- claiming -----------------------------------------------------------

    def claim(self, tunnel: Tunnel) -> bool:
        """Compare-and-swap the tunnel's node to ours; False if another node got there first."""
        previous = tunnel.node
        if Tunnel.objects.filter(pk=tunnel.pk, node=previous).update(node=self.node) != 1:
            return False
        tunnel.node = self.node
        logger.info("claimed tunnel %s (%s) from %s", tunnel.name, tunnel.uuid, previous or "no node")
        return True

    def _update(self, tunnel: Tunnel, **values) -> bool:
        """Write observed state, only while the tunnel is still ours."""
        if "status" in values and values["status"] != tunnel.status:
            values.setdefault("status_changed_at", timezone.now())
        updated = Tunnel.objects.filter(pk=tunnel.pk, node=self.node).update(**values) == 1
        if updated:
            for name, value in values.items():
                if not hasattr(value, "resolve_expression"):
                    setattr(tunnel, name, value)
        return updated

    def _settle_stopped(self, tunnel: Tunnel) -> None:
        values = {}
        if tunnel.status != Status.STOPPED:
            values.update(status=Status.STOPPED, pid=None, process_create_time=None)
        if tunnel.backoff_until or tunnel.consecutive_failures:
            values.update(backoff_until=None, consecutive_failures=0)
        if values:
            self._update(tunnel, **values)
        # Release the claim so a stopped tunnel costs no node anything; any node may start it later.
        if Tunnel.objects.filter(pk=tunnel.pk, node=self.node, desired_state=Desired.STOPPED).update(node="") == 1:
            tunnel.node = ""

    def _open_session(self, tunnel: Tunnel, pid: int, when) -> TunnelSession:
        token = tunnel.desired_by_token
        return TunnelSession.objects.create(
            tunnel=tunnel,
            owner_id=tunnel.owner_id,
            tunnel_uuid=tunnel.uuid,
            name=tunnel.name,
            hash=tunnel.hash,
            direction=tunnel.direction,
            listen=tunnel.listen,
            node=self.node,
            pid=pid,
            started_at=when,
            requested_by_id=tunnel.desired_by_id,
            token=token,
            token_label=token.label if token is not None else "",
        )

    def _close_session(self, tracked: Tracked, reason: str, detail: str, *, ended_by=None) -> None:
        if tracked.session_id is None:
            return
        TunnelSession.objects.filter(pk=tracked.session_id, ended_at=None).update(
            ended_at=timezone.now(), exit_reason=reason, exit_detail=detail[:2000], ended_by=ended_by
        )

    def _record_error(self, tunnel: Tunnel, message: str) -> None:
        # The owner reads last_error: an exception's text may name server paths (the log has them in full).
        try:
            self.fail(tunnel, self.tracked.get(str(tunnel.uuid)), redact(message), False)
        except Exception:
            logger.exception("tunnel %s: could not record the error", tunnel.uuid)

    # --- per-user keys (tunnels.agent) ------------------------------------------

    def _touch_key(self, tunnel: Tunnel) -> None:
        """The tunnel authenticated with its key: record it, at most once a minute per key."""
        if not tunnel.ssh_key_id:
            return
        now = time.monotonic()
        last = self._key_touched.get(tunnel.ssh_key_id)
        if last is not None and now - last < KEY_TOUCH_SECONDS:
            return
        self._key_touched[tunnel.ssh_key_id] = now
        SshKey.objects.filter(pk=tunnel.ssh_key_id).update(last_used_at=timezone.now())

    def _keep_failed(self, tunnel: Tunnel, tracked: Tracked | None, reason: str) -> None:
        """A precondition fails: no process, status failed with the reason, and no retries."""
        if tracked is not None:
            self.stop(tunnel, tracked, ExitReason.FAILED, reason)
        if tunnel.status != Status.FAILED or tunnel.last_error != reason:
            self._update(tunnel, status=Status.FAILED, last_error=reason, pid=None)
