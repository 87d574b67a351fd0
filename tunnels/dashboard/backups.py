"""Dashboard: the user's configuration backups (list, a backup's tunnels, restore).

The API's ``BackupViewSet`` offers the same: list, retrieve, restore through
``services.restore_backup``, which backs the current configuration up first and
refuses the whole restore (nothing changed) when any tunnel would be refused.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from tunnels import services
from tunnels.dashboard.base import mine, owned_or_404, page
from tunnels.dashboard.rows import flag
from tunnels.models import ConfigBackup, JSONArrayLength
from tunnelsite.errors import ServiceError

PAGE_SIZE = 50


def _backups(request: HttpRequest):
    return mine(request, ConfigBackup.objects.all()).order_by("-created_at", "-id")


def _snapshot_rows(backup: ConfigBackup) -> list[dict]:
    """The backup's tunnels as the table shows them (a hand-edited backup may hold odd entries: skip those)."""
    return [{**item, "flag": flag(item.get("direction", ""))} for item in backup.tunnels if isinstance(item, dict)]


@page
@require_GET
def backup_list(request: HttpRequest) -> HttpResponse:
    # A list shows only each snapshot's size, counted by the database, not its (possibly large) JSON.
    rows = _backups(request).annotate(tunnel_count=JSONArrayLength("tunnels")).defer("tunnels")
    backups = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page") or "1")
    return render(request, "dashboard/backups.html", {"page": backups})


@page
@require_GET
def backup_detail(request: HttpRequest, pk: str) -> HttpResponse:
    backup = owned_or_404(request, _backups(request), pk=pk)
    return render(request, "dashboard/backup.html", {"backup": backup, "rows": _snapshot_rows(backup)})


@page
@require_http_methods(["GET", "POST"])
def backup_restore(request: HttpRequest, pk: str) -> HttpResponse:
    backup = owned_or_404(request, _backups(request), pk=pk)
    context = {"backup": backup, "rows": _snapshot_rows(backup), "error": None}
    if request.method == "GET":
        return render(request, "dashboard/backup_restore.html", context)
    try:
        services.restore_backup(backup, services.Actor(user=request.user))
    except ServiceError as exc:
        context["error"] = exc
        return render(request, "dashboard/backup_restore.html", context, status=exc.status)
    messages.success(request, "Configuration restored; the configuration it replaced was backed up first.")
    return redirect("dashboard:tunnels")
