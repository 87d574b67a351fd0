"""REST API v1 (tunnels side), mounted at /api/v1/ beside accounts/api/urls.py."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from tunnels.api import calls, keys, known_hosts, views

app_name = "tunnels-api"

router = SimpleRouter()
router.register("tunnels", views.TunnelViewSet, basename="tunnel")
router.register("history", views.HistoryViewSet, basename="history")
router.register("backups", views.BackupViewSet, basename="backup")
router.register("ssh-keys", keys.SshKeyViewSet, basename="ssh-key")
router.register("known-hosts", known_hosts.KnownHostViewSet, basename="known-host")

urlpatterns = [
    path("status", views.StatusView.as_view(), name="status"),
    *(path(f"calls/{name}", view.as_view(), name=f"call-{name}") for name, view in calls.CALLS.items()),
    path("calls/<str:call>", calls.UnknownCall.as_view(), name="call-unknown"),
    # No call named at all: the same envelope (21), not a bare 404.
    path("calls/", calls.UnknownCall.as_view(), name="call-none"),
    *router.urls,
]
