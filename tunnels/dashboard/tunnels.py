"""The tunnels page (``/``): the user's table, its polled fragment and the actions on a selection."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from tunnels import services
from tunnels.dashboard import auth, rows
from tunnels.dashboard.base import mine, page
from tunnels.models import Tunnel
from tunnelsite.errors import ServiceError

# Seconds between refreshes of the status table (htmx polling; paused while the tab is hidden).
POLL_SECONDS = 3


def table_rows(request: HttpRequest) -> list[rows.Row]:
    tunnels = list(mine(request, Tunnel.objects.all()).order_by("name", "created_at", "id"))
    now = timezone.now()
    # One query for the whole table, none when no tunnel is interactive.
    asking = services.pending_prompt_ids([t.pk for t in tunnels if t.interactive])
    return [rows.row(tunnel, now, tunnel.pk in asking) for tunnel in tunnels]


def index(request: HttpRequest) -> HttpResponse:
    """A visitor sees the login form here; a logged-in user their tunnels."""
    if not request.user.is_authenticated:
        if request.method != "GET":
            return redirect_to_login("/")
        return auth.LoginView.as_view()(request)
    return tunnels_page(request)


@page
def tunnels_page(request: HttpRequest) -> HttpResponse:
    context = {"rows": table_rows(request), "poll_seconds": POLL_SECONDS, "problems": services.node_problems()}
    return render(request, "dashboard/tunnels.html", context)


@page
def table_fragment(request: HttpRequest) -> HttpResponse:
    """The table body alone, polled by the page."""
    return render(request, "dashboard/tunnels_table.html", {"rows": table_rows(request), "poll_seconds": POLL_SECONDS})


def selected(request: HttpRequest) -> list[Tunnel]:
    """The user's tunnels among the posted ids; ids of anyone else's (or garbage) are simply not found."""
    ids = []
    for value in request.POST.getlist("selected"):
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    return list(mine(request, Tunnel.objects.filter(uuid__in=ids)).order_by("name"))


@require_POST
@page
def bulk(request: HttpRequest) -> HttpResponse:
    chosen = selected(request)
    action = request.POST.get("action", "")
    actor = services.Actor(user=request.user)
    if not chosen:
        messages.warning(request, "Select one or more tunnels first.")
    elif action == "start":
        started, skipped = services.start_all(chosen, actor)
        report(request, "started", started, skipped)
    elif action == "stop":
        report(request, "stopped", services.stop_all(chosen, actor), [])
    elif action == "restart":
        restarted, skipped = [], []
        for tunnel in chosen:
            try:
                services.request_restart(tunnel, actor, interactive_ok=False)
                restarted.append(tunnel)
            except ServiceError:
                skipped.append(tunnel)
        report(request, "restarted", restarted, skipped)
    else:
        messages.error(request, "Unknown action.")
    return redirect("dashboard:tunnels")


def report(request: HttpRequest, verb: str, done: list[Tunnel], skipped: list[Tunnel]) -> None:
    if done:
        messages.success(request, f"{verb.capitalize()}: {', '.join(t.name for t in done)}.")
    if skipped:
        names = ", ".join(t.name for t in skipped)
        messages.warning(request, f"Not {verb} (interactive, or another tunnel holds its port): {names}.")
