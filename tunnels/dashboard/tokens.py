"""Dashboard: the user's API tokens (create, list, revoke).

The rules are the API's: ``TokenCreateSerializer`` decides what a label,
scopes and lifetime may be (and which scopes this user may hand out),
``accounts.tokens`` mints and revokes. A new token's raw value is in the
response to the create POST only; nothing stores it, so a reload shows the
prefix alone.
"""

from __future__ import annotations

import secrets

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts import tokens
from accounts.api.serializers import TokenCreateSerializer
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN, ApiToken
from tunnels.dashboard.base import mine, owned_or_404, page
from tunnels.dashboard.forms import ServiceForm

DAY = 86400
EXPIRY_CHOICES = [
    ("", "Never"),
    (str(DAY), "1 day"),
    (str(7 * DAY), "7 days"),
    (str(30 * DAY), "30 days"),
    (str(90 * DAY), "90 days"),
    (str(365 * DAY), "1 year"),
]
SCOPE_HELP = {
    "read": "read: list and view",
    "operate": "operate: start, stop, restart",
    "write": "write: create, change, delete",
    SCOPE_ADMIN: "admin: other users' objects (staff)",
}


# A create form carries a one-time id: sending the same form again (a reload of the
# page that showed the token, with JavaScript off) mints nothing and shows no secret.
SUBMITTED_KEY = "dashboard_token_forms"
SUBMITTED_KEEP = 20


class TokenForm(ServiceForm):
    once = forms.CharField(widget=forms.HiddenInput, max_length=64, required=False)
    label = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'backup script'.")
    scopes = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, help_text="What the token may do.")
    expires_in = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, required=False, initial=str(90 * DAY))

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        offered = [scope for scope in ALL_SCOPES if scope != SCOPE_ADMIN or user.is_staff]
        self.fields["scopes"].choices = [(scope, SCOPE_HELP[scope]) for scope in offered]
        self.fields["scopes"].initial = list(DEFAULT_SCOPES)
        self.fields["once"].initial = secrets.token_urlsafe(16)

    def api_data(self) -> dict:
        """The form's values as the API's create body, so the API's serializer checks them."""
        data = {"label": self.cleaned_data["label"], "scopes": self.cleaned_data["scopes"]}
        if self.cleaned_data["expires_in"]:
            data["expires_in"] = int(self.cleaned_data["expires_in"])
        return data


def _listing(request: HttpRequest):
    return tokens.unrevoked(mine(request, ApiToken.objects.all())).order_by("-created_at", "-id")


def _page(request: HttpRequest, form: TokenForm, *, created=None, raw: str = "", status: int = 200) -> HttpResponse:
    context = {"form": form, "tokens": _listing(request), "created": created, "raw_token": raw}
    response = render(request, "dashboard/tokens.html", context, status=status)
    if raw:
        response["Cache-Control"] = "no-store"  # the one page holding the secret stays out of caches
    return response


@page
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, TokenForm(user=request.user))
    form = TokenForm(request.POST, user=request.user)
    if already_sent(request):
        messages.info(
            request, "That form was already sent: the token it created is in the list; it is not shown again."
        )
        return redirect("dashboard:tokens")
    if not form.is_valid():
        return _page(request, form, status=400)
    checked = TokenCreateSerializer(data=form.api_data(), context={"request": request})
    if not checked.is_valid():
        form.add_serializer_errors(checked.errors)
        return _page(request, form, status=400)
    values = checked.validated_data
    if form.cleaned_data["once"]:
        mark_sent(request, form.cleaned_data["once"])
    token, raw = tokens.mint(
        request.user, label=values["label"], scopes=values["scopes"], expires_in=values.get("expires_in")
    )
    return _page(request, TokenForm(user=request.user), created=token, raw=raw, status=201)


def already_sent(request: HttpRequest) -> bool:
    """A create form sent again (a reload without JavaScript): it must create nothing and show no secret."""
    return request.POST.get("once") in request.session.get(SUBMITTED_KEY, [])


def mark_sent(request: HttpRequest, once: str) -> None:
    request.session[SUBMITTED_KEY] = [*request.session.get(SUBMITTED_KEY, [])[-SUBMITTED_KEEP + 1 :], once]


@page
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, pk) -> HttpResponse:
    token = owned_or_404(request, tokens.unrevoked(ApiToken.objects.all()), pk=pk)
    if request.method == "POST":
        tokens.revoke(token)
        return redirect("dashboard:tokens")
    return render(request, "dashboard/token_revoke.html", {"token": token})
