"""One tunnel: its page (configuration, log tail, sessions, connection test, key line) and its changes.

Each change is one service call; a refusal (400/403/409) is shown on the form or as a
message and nothing is changed. Another user's tunnel is the 404 page.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tunnels import logfiles, preflight, services, services_keys
from tunnels.dashboard import rows
from tunnels.dashboard.base import owned_or_404, page
from tunnels.dashboard.forms import TunnelForm, initial_for
from tunnels.models import Tunnel, TunnelSession
from tunnelsite.errors import ServiceError

LOG_LINES = 200
LOG_POLL_SECONDS = 2
# While an interactive tunnel starts, its page looks this often for the question ssh asks.
PROMPT_POLL_SECONDS = 1
SESSIONS_SHOWN = 20
ACTIONS = {
    "start": services.request_start,
    "stop": services.request_stop,
    "restart": services.request_restart,
}
DONE = {"start": "started", "stop": "stopped", "restart": "restarted"}


def actor(request: HttpRequest) -> services.Actor:
    return services.Actor(user=request.user)


def get_tunnel(request: HttpRequest, tunnel_id: str) -> Tunnel:
    return owned_or_404(request, Tunnel.objects.select_related("ssh_key"), uuid=tunnel_id)


def log_tail(tunnel: Tunnel) -> str:
    try:
        return logfiles.tail_lines(tunnel.log_path, LOG_LINES)
    except FileNotFoundError:
        return ""


def key_line(tunnel: Tunnel) -> tuple[str, str]:
    """(the authorized_keys line of the tunnel's key, why there is none)."""
    if tunnel.ssh_key is None:
        return "", "This tunnel uses no SSH key of yours."
    try:
        return services_keys.authorized_keys_line(tunnel.ssh_key), ""
    except ServiceError as exc:
        return "", exc.message


def login_prompt(tunnel: Tunnel) -> services.Pending | None:
    return services.pending_prompt(tunnel) if tunnel.interactive else None


@require_GET
@page
def detail(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    line, no_line = key_line(tunnel)
    prompt = login_prompt(tunnel)
    context = {
        "row": rows.row(tunnel, timezone.now(), prompt is not None),
        "tunnel": tunnel,
        "prompt": prompt,
        "prompt_poll_seconds": PROMPT_POLL_SECONDS,
        "log": log_tail(tunnel),
        "log_poll_seconds": LOG_POLL_SECONDS,
        "sessions": TunnelSession.objects.filter(tunnel_uuid=tunnel.uuid, owner_id=tunnel.owner_id)
        .select_related("requested_by")
        .order_by("-started_at", "-id")[:SESSIONS_SHOWN],
        "test": preflight.tests_of(tunnel).first(),
        "form": TunnelForm(owner=request.user, initial=initial_for(tunnel)),
        "key_line": line,
        "no_key_line": no_line,
    }
    return render(request, "dashboard/tunnel.html", context)


@require_GET
@page
def log_fragment(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    context = {"tunnel": tunnel, "log": log_tail(tunnel), "log_poll_seconds": LOG_POLL_SECONDS}
    return render(request, "dashboard/tunnel_log.html", context)


@require_GET
@page
def status_fragment(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    row = rows.row(tunnel, timezone.now(), login_prompt(tunnel) is not None)
    return render(request, "dashboard/tunnel_status.html", {"row": row, "tunnel": tunnel})


@require_GET
@page
def prompt_fragment(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    """The login card alone: polled while an interactive tunnel starts, until ssh asks something."""
    tunnel = get_tunnel(request, tunnel_id)
    context = {"tunnel": tunnel, "prompt": login_prompt(tunnel), "prompt_poll_seconds": PROMPT_POLL_SECONDS}
    return render(request, "dashboard/tunnel_prompt.html", context)


@require_POST
@page
def answer_prompt(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    """The user's answer to the login prompt: handed to ssh through the service layer, never shown again."""
    tunnel = get_tunnel(request, tunnel_id)
    try:
        services.answer_prompt(tunnel, request.POST.get("answer"))
    except ServiceError as exc:
        messages.error(request, f"Not sent: {exc.message}.")
    else:
        messages.success(request, f"Answer sent: tunnel {tunnel.name} is logging in.")
    return redirect("dashboard:tunnel", tunnel.uuid)


@require_POST
@page
def action(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    name = request.POST.get("action", "")
    if name not in ACTIONS:
        messages.error(request, "Unknown action.")
    else:
        try:
            ACTIONS[name](tunnel, actor(request))
            if tunnel.interactive and name != "stop":
                messages.success(request, f"Tunnel {tunnel.name} is starting: answer its login prompt on its page.")
            else:
                messages.success(request, f"Tunnel {tunnel.name} {DONE[name]}.")
        except ServiceError as exc:
            messages.error(request, exc.message)
    return redirect(next_page(request))


def next_page(request: HttpRequest) -> str:
    """Back where the button was (the list or the tunnel page); only our own paths."""
    target = request.POST.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else "/"


@require_POST
@page
def test_connection(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    try:
        preflight.request_test(tunnel, actor(request))
        messages.info(request, "Connection test requested; a worker runs it and the result appears below.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("dashboard:tunnel", tunnel.uuid)


@require_GET
@page
def test_fragment(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    return render(request, "dashboard/tunnel_test.html", {"tunnel": tunnel, "test": preflight.tests_of(tunnel).first()})


@require_http_methods(["GET", "POST"])
@page
def add(request: HttpRequest) -> HttpResponse:
    initial = {"ssh_key": str(services.default_key_id(request.user) or "")}
    form = TunnelForm(request.POST or None, owner=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            tunnel = services.create_tunnel(
                request.user, form.service_data(creating=True), actor(request), assign_port=True
            )
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Tunnel {tunnel.name} created.")
            return redirect("dashboard:tunnel", tunnel.uuid)
    return render(request, "dashboard/tunnel_form.html", {"form": form, "tunnel": None})


@require_http_methods(["GET", "POST"])
@page
def edit(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    tunnel = get_tunnel(request, tunnel_id)
    form = TunnelForm(request.POST or None, owner=request.user, initial=initial_for(tunnel))
    if request.method == "POST" and form.is_valid():
        try:
            tunnel = services.update_tunnel(tunnel, form.service_data(creating=False), actor(request))
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Tunnel {tunnel.name} saved.")
            return redirect("dashboard:tunnel", tunnel.uuid)
    return render(request, "dashboard/tunnel_form.html", {"form": form, "tunnel": tunnel})


@require_http_methods(["GET", "POST"])
@page
def delete(request: HttpRequest, tunnel_id: str) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    tunnel = get_tunnel(request, tunnel_id)
    if request.method == "POST":
        try:
            services.delete_tunnel(tunnel, actor(request))
        except ServiceError as exc:
            messages.error(request, exc.message)
            return redirect("dashboard:tunnel", tunnel.uuid)
        messages.success(request, f"Tunnel {tunnel.name} deleted.")
        return redirect("dashboard:tunnels")
    return render(request, "dashboard/tunnel_delete.html", {"tunnel": tunnel, "row": rows.row(tunnel, timezone.now())})
