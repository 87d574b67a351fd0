"""Dashboard: the user's SSH keys (generate, upload, list with the authorized_keys line, delete).

``tunnels.services_keys`` decides everything (names, sizes, duplicates, the
per-user limit, a key in use); these views show its refusals on the form.
Private key material never appears on a page: an uploaded key and its
passphrase go into the service and are not rendered back.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from tunnels import services_keys, sshkeys
from tunnels.dashboard.base import mine, owned_or_404, page
from tunnels.dashboard.forms import ServiceForm
from tunnels.models import SshKey, Tunnel
from tunnelsite.errors import ServiceError

NAME_HELP = "Letters, digits, '.', '_', '-', '@', '+'; unique among your keys, e.g. 'laptop'."


def expires_field() -> forms.CharField:
    """Passed to the service as typed (it parses and refuses a past or malformed time)."""
    return forms.CharField(
        required=False,
        label="Expires (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional: an expired key no longer starts tunnels.",
    )


class GenerateForm(ServiceForm):
    name = forms.CharField(max_length=100, help_text=NAME_HELP)
    algorithm = forms.ChoiceField(
        choices=[(sshkeys.ED25519, "ed25519 (recommended)"), (sshkeys.RSA, "RSA")],
        initial=sshkeys.ED25519,
        widget=forms.RadioSelect,
    )
    bits = forms.IntegerField(
        required=False,
        label="RSA size (bits)",
        help_text=f"RSA only; empty for {sshkeys.RSA_DEFAULT_BITS}.",
    )
    expires_at = expires_field()


class UploadForm(ServiceForm):
    name = forms.CharField(max_length=100, help_text=NAME_HELP)
    private_key = forms.CharField(
        label="Private key",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "autocomplete": "off"}),
        help_text="OpenSSH or PEM, from -----BEGIN to -----END. It is stored encrypted and never shown again.",
    )
    passphrase = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Only if the key is protected by one; it is used once to read the key and not stored.",
    )
    expires_at = expires_field()


def _keys(request: HttpRequest) -> list[SshKey]:
    """The user's keys, each with its tunnels and its authorized_keys line: three queries for any number."""
    using = Prefetch("tunnels", queryset=Tunnel.objects.order_by("name", "id"))
    keys = list(mine(request, SshKey.objects.select_related("owner").prefetch_related(using)).order_by("created_at"))
    for key in keys:
        key.tunnel_names = [tunnel.name for tunnel in key.tunnels.all()]
        try:
            key.line = services_keys.authorized_keys_line(key, tunnels=key.tunnels.all())
        except ServiceError as exc:  # a tunnel whose target cannot be written into the line
            key.line, key.line_problem = "", exc.message
    return keys


def _page(request: HttpRequest, generate=None, upload=None, status: int = 200) -> HttpResponse:
    context = {
        "keys": _keys(request),
        "generate_form": generate or GenerateForm(prefix="generate"),
        "upload_form": upload or UploadForm(prefix="upload"),
    }
    return render(request, "dashboard/keys.html", context, status=status)


@page
@require_http_methods(["GET"])
def key_list(request: HttpRequest) -> HttpResponse:
    return _page(request)


@page
@require_POST
def key_generate(request: HttpRequest) -> HttpResponse:
    form = GenerateForm(request.POST, prefix="generate")
    if not form.is_valid():
        return _page(request, generate=form, status=400)
    values = form.cleaned_data
    try:
        key = services_keys.generate_key(
            request.user, values["name"], values["algorithm"], values["bits"], values["expires_at"] or None
        )
    except ServiceError as exc:
        form.add_service_error(exc)
        return _page(request, generate=form, status=exc.status)
    messages.success(request, f"Key '{key.name}' generated ({key.fingerprint}).")
    return redirect("dashboard:keys")


@page
@require_POST
def key_upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, prefix="upload")
    if not form.is_valid():
        return _page(request, upload=_without_secrets(form), status=400)
    values = form.cleaned_data
    try:
        key = services_keys.upload_key(
            request.user,
            values["name"],
            values["private_key"],
            values["passphrase"] or None,
            values["expires_at"] or None,
        )
    except ServiceError as exc:
        form.add_service_error(exc)
        return _page(request, upload=_without_secrets(form), status=exc.status)
    messages.success(request, f"Key '{key.name}' uploaded ({key.fingerprint}).")
    return redirect("dashboard:keys")


def _without_secrets(form: UploadForm) -> UploadForm:
    """A refused upload is shown again with its errors but without the pasted key or passphrase."""
    data = form.data.copy()
    for field in ("private_key", "passphrase"):
        data[form.add_prefix(field)] = ""
    errors = form.errors
    bound = UploadForm(data, prefix=form.prefix)
    bound._errors = errors  # keep the errors found with the real values
    return bound


@page
@require_http_methods(["GET", "POST"])
def key_delete(request: HttpRequest, pk) -> HttpResponse:
    key = owned_or_404(request, SshKey.objects.select_related("owner"), pk=pk)
    context = {"key": key, "tunnel_names": [tunnel.name for tunnel in services_keys.tunnels_using(key)]}
    if request.method == "GET":
        return render(request, "dashboard/key_delete.html", context)
    try:
        services_keys.delete_key(key)
    except ServiceError as exc:
        return render(request, "dashboard/key_delete.html", {**context, "error": exc.message}, status=exc.status)
    messages.success(request, f"Key '{key.name}' deleted.")
    return redirect("dashboard:keys")
