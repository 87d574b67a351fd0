"""Dashboard: the user's own account (limits and network grants) and the history of all their tunnels' sessions."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts import profile
from tunnels.dashboard.base import mine, page
from tunnels.models import Tunnel, TunnelSession

PAGE_SIZE = 50


@page
@require_http_methods(["GET"])
def account(request: HttpRequest) -> HttpResponse:
    """What ``/api/v1/users/me/`` says, for a person: limits, usage and grants (staff change them)."""
    user = request.user
    context = {
        "quotas": profile.quotas(user),
        "network": profile.network(user),
        "tunnel_count": mine(request, Tunnel.objects.all()).count(),
    }
    return render(request, "dashboard/account.html", context)


@page
@require_http_methods(["GET"])
def history(request: HttpRequest) -> HttpResponse:
    """Every session of the user's tunnels, newest first, deleted tunnels included (as ``/api/v1/history/``)."""
    sessions = mine(request, TunnelSession.objects.select_related("requested_by")).order_by("-started_at", "-id")
    current = set(mine(request, Tunnel.objects.all()).values_list("uuid", flat=True))
    sessions_page = Paginator(sessions, PAGE_SIZE).get_page(request.GET.get("page") or "1")
    return render(request, "dashboard/history.html", {"page": sessions_page, "current": current})
