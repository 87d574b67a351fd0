"""Admin page of the worker nodes: when each last reported, which ones stopped reporting, and the
problem a node reports with its heartbeat (``WorkerNode.error``, e.g. "database unreachable")."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone
from django.utils.safestring import SafeString

from tunnels.admin.badges import GREEN, ORANGE, RED, badge
from tunnels.models import WorkerNode


def heartbeat_age(node: WorkerNode, now=None) -> timedelta:
    return (now or timezone.now()) - node.last_seen


def is_stale(node: WorkerNode, now=None) -> bool:
    """Past its lease, other nodes may take its tunnels over (tunnels.reconciler reads the same setting)."""
    return heartbeat_age(node, now) > timedelta(seconds=settings.WORKER_LEASE_SECONDS)


def describe_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


@admin.register(WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    list_display = ("name", "health", "heartbeat", "problem", "hostname", "pid", "version", "started_at", "last_seen")
    search_fields = ("name", "hostname", "error")
    ordering = ("-last_seen",)

    def has_add_permission(self, request) -> bool:
        return False  # workers register themselves; a dead node's row may be deleted

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="heartbeat", ordering="-last_seen")
    def heartbeat(self, node: WorkerNode) -> str:
        return describe_age(heartbeat_age(node))

    @admin.display(description="problem", ordering="error_since")
    def problem(self, node: WorkerNode) -> str:
        return describe_problem(node)

    @admin.display(description="health")
    def health(self, node: WorkerNode) -> SafeString:
        lease = settings.WORKER_LEASE_SECONDS
        if is_stale(node):
            return badge("stale", RED, f"no heartbeat within the {lease} s lease (TUNNELSITE_WORKER_LEASE)")
        if node.error:
            return badge("error", ORANGE, f"reports: {describe_problem(node)}")
        return badge("alive", GREEN, f"reported within the {lease} s lease")


def describe_problem(node: WorkerNode, now=None) -> str:
    """``disk full: data dir (since 3 min ago)``; empty when the node reports none."""
    if not node.error:
        return ""
    if node.error_since is None:
        return node.error
    return f"{node.error} (since {describe_age((now or timezone.now()) - node.error_since)})"
