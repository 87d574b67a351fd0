"""Coordination rows of the workers: nodes and the change marker."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class WorkerNode(models.Model):
    """A running tunnel_worker; heartbeats let other nodes take over its tunnels."""

    name = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    version = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    # A node-level problem the worker reports with its heartbeat ("database unreachable",
    # "disk full: data dir"); empty when all is well.
    error = models.CharField(max_length=300, blank=True)
    error_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class ChangeMarker(models.Model):
    """A counter the service layer bumps on every desired-state change.

    The worker polls this single row several times a second instead of
    re-reading every tunnel.
    """

    name = models.CharField(max_length=50, primary_key=True)
    value = models.PositiveBigIntegerField(default=0)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
