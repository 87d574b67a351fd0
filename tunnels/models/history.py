"""History of tunnels: one row per process lifetime, and configuration snapshots."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tunnels.models.tunnel import DIRECTION_CHOICES, Tunnel
from tunnelsite.owned import OwnedQuerySet


class ExitReason(models.TextChoices):
    STOPPED_BY_USER = "stopped_by_user", "stopped by user"
    CRASHED = "crashed", "crashed"
    CONFIG_CHANGED = "config_changed", "restarted after config change"
    DELETED = "deleted", "tunnel deleted"
    FAILED = "failed", "failed to start"
    NODE_LOST = "node_lost", "worker node lost"
    HANDED_OVER = "handed_over", "taken over by another node"
    WORKER_EXIT = "worker_exit", "worker shut down"
    GONE = "gone", "process disappeared"
    AUTH_FAILED = "auth_failed", "authentication failed"


class TunnelSession(models.Model):
    """One process lifetime of a tunnel. Kept after the tunnel is deleted."""

    owner_field = "owner"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tunnel = models.ForeignKey(Tunnel, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tunnel_sessions")
    tunnel_uuid = models.UUIDField(db_index=True)
    name = models.CharField(max_length=100)
    hash = models.CharField(max_length=32)
    direction = models.CharField(max_length=20, choices=DIRECTION_CHOICES)
    listen = models.CharField(max_length=300, blank=True)
    node = models.CharField(max_length=100, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=20, choices=ExitReason.choices, blank=True)
    exit_detail = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey("accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    token_label = models.CharField(max_length=100, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # history/ lists an owner's sessions newest first.
            models.Index(fields=["owner", "-started_at"], name="session_owner_started"),
            # The worker closes the open session of a tunnel.
            models.Index(fields=["tunnel", "ended_at"], name="session_tunnel_open"),
        ]

    def __str__(self) -> str:
        return f"{self.name} pid {self.pid} from {self.started_at:%Y-%m-%d %H:%M:%S}"


class JSONArrayLength(models.Func):
    """The length of a JSON array column, counted by the database.

    Lists of backups show how many tunnels each holds without loading (and
    decoding) every snapshot; SQLite and PostgreSQL name the function differently.
    """

    function = "JSON_ARRAY_LENGTH"
    output_field = models.IntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="JSONB_ARRAY_LENGTH", **extra_context)


class ConfigBackup(models.Model):
    """A snapshot of one owner's tunnel configuration, taken before a change."""

    owner_field = "owner"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="config_backups")
    created_at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=200)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tunnels = models.JSONField(default=list)
    file_name = models.CharField(max_length=255)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="backup_owner_created")]

    def __str__(self) -> str:
        return f"{self.owner} {self.created_at:%Y-%m-%d %H:%M:%S} ({self.reason})"
