"""Dashboard: the user's access keys for HTTP Signature auth (create, list, disable/enable, delete).

The rules are the API's (``AccessKeyViewSet``): ``AccessKeySerializer`` decides what a
label and scopes may be, ``accounts.keys`` creates (and enforces the per-user limit).
The secret is in the response to the create POST only; a reload shows the key id alone.
"""

from __future__ import annotations

import secrets

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import keys
from accounts.api.serializers import AccessKeySerializer
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN, AccessKey
from tunnels.dashboard.base import mine, owned_or_404, page
from tunnels.dashboard.forms import ServiceForm
from tunnels.dashboard.tokens import SCOPE_HELP, already_sent, mark_sent
from tunnelsite.errors import QuotaExceeded


class AccessKeyForm(ServiceForm):
    once = forms.CharField(widget=forms.HiddenInput, max_length=64, required=False)
    label = forms.CharField(max_length=100, required=False, help_text="What the key is for, e.g. 'deploy job'.")
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, help_text="What the key may do.")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        offered = [scope for scope in ALL_SCOPES if scope != SCOPE_ADMIN or user.is_staff]
        self.fields["scopes"].choices = [(scope, SCOPE_HELP[scope]) for scope in offered]
        self.fields["scopes"].initial = list(DEFAULT_SCOPES)
        self.fields["once"].initial = secrets.token_urlsafe(16)


def _listing(request: HttpRequest):
    return mine(request, AccessKey.objects.all()).order_by("-created_at", "-id")


def _page(request: HttpRequest, form: AccessKeyForm, *, created=None, secret: str = "", status: int = 200):
    context = {"form": form, "keys": _listing(request), "created": created, "secret": secret}
    response = render(request, "dashboard/access_keys.html", context, status=status)
    if secret:
        response["Cache-Control"] = "no-store"  # the one page holding the secret stays out of caches
    return response


@page
@require_http_methods(["GET", "POST"])
def access_key_list(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, AccessKeyForm(user=request.user))
    form = AccessKeyForm(request.POST, user=request.user)
    if already_sent(request):
        messages.info(
            request, "That form was already sent: the key it created is in the list; its secret is not shown again."
        )
        return redirect("dashboard:access-keys")
    if not form.is_valid():
        return _page(request, form, status=400)
    checked = AccessKeySerializer(
        data={"label": form.cleaned_data["label"], "scopes": form.cleaned_data["scopes"]}, context={"request": request}
    )
    if not checked.is_valid():
        form.add_serializer_errors(checked.errors)
        return _page(request, form, status=400)
    try:
        key, secret = keys.create(
            request.user, label=checked.validated_data.get("label", ""), scopes=checked.validated_data.get("scopes")
        )
    except QuotaExceeded as exc:
        form.add_error(None, str(exc))
        return _page(request, form, status=403)
    if form.cleaned_data["once"]:
        mark_sent(request, form.cleaned_data["once"])
    return _page(request, AccessKeyForm(user=request.user), created=key, secret=secret, status=201)


@page
@require_http_methods(["GET", "POST"])
def access_key_disable(request: HttpRequest, pk) -> HttpResponse:
    key = owned_or_404(request, AccessKey.objects.all(), pk=pk)
    if request.method == "POST":
        AccessKey.objects.filter(pk=key.pk).update(is_active=False)
        return redirect("dashboard:access-keys")
    return render(request, "dashboard/access_key_confirm.html", {"key": key, "action": "disable"})


@page
@require_POST
def access_key_enable(request: HttpRequest, pk) -> HttpResponse:
    key = owned_or_404(request, AccessKey.objects.all(), pk=pk)
    AccessKey.objects.filter(pk=key.pk).update(is_active=True)
    return redirect("dashboard:access-keys")


@page
@require_http_methods(["GET", "POST"])
def access_key_delete(request: HttpRequest, pk) -> HttpResponse:
    key = owned_or_404(request, AccessKey.objects.all(), pk=pk)
    if request.method == "POST":
        key.delete()
        return redirect("dashboard:access-keys")
    return render(request, "dashboard/access_key_confirm.html", {"key": key, "action": "delete"})
