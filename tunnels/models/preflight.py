"""Connection tests: a one-shot ssh with a tunnel's real settings, run by a worker on request."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tunnelsite.owned import OwnedQuerySet


class TestState(models.TextChoices):
    PENDING = "pending", "waiting for a worker"
    RUNNING = "running", "running"
    DONE = "done", "done"


class ConnectionTest(models.Model):
    """One preflight of one tunnel. The web process only creates it; a worker runs it and fills the result."""

    __test__ = False  # not a pytest test class, whatever its name says

    owner_field = "owner"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tunnel = models.ForeignKey("tunnels.Tunnel", on_delete=models.CASCADE, related_name="connection_tests")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connection_tests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=TestState.choices, default=TestState.PENDING)
    node = models.CharField(max_length=100, blank=True, help_text="worker node that ran the test")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(null=True, blank=True)
    step = models.CharField(max_length=20, blank=True, help_text="the step that failed (or the last one passed)")
    detail = models.TextField(blank=True)
    steps = models.JSONField(default=list, help_text='[{"step", "ok", "detail"}, ...] in order')

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(state__in=TestState.values), name="conntest_state_valid"),
        ]
        indexes = [
            # Every worker pass looks for pending tests, oldest first.
            models.Index(fields=["state", "created_at"], name="conntest_state_created"),
            models.Index(fields=["tunnel", "-created_at"], name="conntest_tunnel_created"),
        ]

    def __str__(self) -> str:
        return f"test of {self.tunnel_id} {self.state} {self.step}"
