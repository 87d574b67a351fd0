"""Dashboard: the host keys the user trusts (list, pin from ssh-keyscan output, accept a changed key, delete).

``tunnels.hostkeys`` decides: accepting trusts the key the server now offers
and retries the user's tunnels to it; deleting means the next connection
trusts whatever key the server offers (trust on first use).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from tunnels import hostkeys
from tunnels.dashboard.base import mine, owned_or_404, page
from tunnels.dashboard.forms import ServiceForm
from tunnels.models import HostKeyState, KnownHost
from tunnelsite.errors import ServiceError

ORDER = ("host", "port", "key_type", "id")


class KeyscanForm(ServiceForm):
    line = forms.CharField(
        label="ssh-keyscan output",
        max_length=hostkeys.MAX_PASTE_CHARS,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
        help_text="Run <code>ssh-keyscan -p PORT HOST</code> over a network you trust and paste its lines: "
        "those keys are trusted before the first connection, instead of whatever the server offers then.",
    )


def _list_page(request: HttpRequest, form: KeyscanForm | None = None, status: int = 200) -> HttpResponse:
    rows = mine(request, KnownHost.objects.all()).order_by(*ORDER)
    context = {"known_hosts": rows, "CHANGED": HostKeyState.CHANGED, "form": form or KeyscanForm()}
    return render(request, "dashboard/known_hosts.html", context, status=status)


@page
@require_http_methods(["GET"])
def known_host_list(request: HttpRequest) -> HttpResponse:
    return _list_page(request)


@page
@require_POST
def known_host_pin(request: HttpRequest) -> HttpResponse:
    form = KeyscanForm(request.POST)
    if not form.is_valid():
        return _list_page(request, form, status=400)
    try:
        rows = hostkeys.create_from_keyscan(request.user, form.cleaned_data["line"])
    except ServiceError as exc:
        form.add_service_error(exc)
        return _list_page(request, form, status=exc.status)
    messages.success(request, f"{len(rows)} host key{'' if len(rows) == 1 else 's'} pinned.")
    return redirect("dashboard:known-hosts")


def _confirm(request: HttpRequest, pk, action: str, change) -> HttpResponse:
    """GET: the confirmation page; POST: ``change(row)`` through the service, its refusal shown on that page."""
    row = owned_or_404(request, KnownHost.objects.all(), pk=pk)
    context = {"row": row, "action": action, "CHANGED": HostKeyState.CHANGED}
    if request.method == "GET":
        return render(request, "dashboard/known_host_confirm.html", context)
    try:
        change(row)
    except ServiceError as exc:
        return render(
            request, "dashboard/known_host_confirm.html", {**context, "error": exc.message}, status=exc.status
        )
    done = "now trusted" if action == "accept" else "forgotten; the next connection trusts the key the server offers"
    messages.success(request, f"Host key of {row.host}:{row.port} {done}.")
    return redirect("dashboard:known-hosts")


@page
@require_http_methods(["GET", "POST"])
def known_host_accept(request: HttpRequest, pk) -> HttpResponse:
    return _confirm(request, pk, "accept", hostkeys.accept)


@page
@require_http_methods(["GET", "POST"])
def known_host_delete(request: HttpRequest, pk) -> HttpResponse:
    return _confirm(request, pk, "delete", hostkeys.delete)
