"""Admin of users and their credentials. Tokens and access keys are created by the same
functions as the API's (``accounts.tokens.mint``, ``accounts.keys.create``), so the secret is
made properly and shown once, on the page that answers the add form; it is never stored readable."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.template.response import TemplateResponse

from accounts import keys, tokens
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, AccessKey, ApiRequest, ApiToken, User
from tunnelsite.errors import ServiceError

CREATED_TEMPLATE = "admin/accounts/credential_created.html"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "tunnel_limit", "date_joined")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (
            "Quotas",
            {
                "fields": (
                    "max_tunnels",
                    "effective_max_tunnels",
                    "local_port_min",
                    "local_port_max",
                    "effective_port_range",
                    "allow_nonloopback_bind",
                ),
                "description": "Leave max tunnels empty for the server-wide default (TUNNELSITE_DEFAULT_MAX_TUNNELS) "
                "and both local port fields empty for the server-wide pool "
                "(TUNNELSITE_PORT_RANGE). The range bounds the ports this user's -L tunnels listen on.",
            },
        ),
        (
            "Network grants",
            {
                "description": "What this user's tunnels may connect to beyond the server-wide policy "
                "(README: Security model). One rule per line; # starts a comment. Staff need none.",
                "fields": ("allow_nonloopback_target", "allowed_targets", "ssh_destinations"),
            },
        ),
    )
    readonly_fields = ("effective_port_range", "effective_max_tunnels")

    @admin.display(description="effective tunnel limit")
    def effective_max_tunnels(self, user: User) -> str:
        if user.is_staff:
            return "no limit (staff)"
        if user.max_tunnels is None:
            return f"{user.effective_max_tunnels} (the server-wide default)"
        return f"{user.effective_max_tunnels} (this user's own limit)"

    @admin.display(description="tunnel limit", ordering="max_tunnels")
    def tunnel_limit(self, user: User) -> str:
        if user.is_staff:
            return "none (staff)"
        own = user.max_tunnels is not None
        return str(user.max_tunnels) if own else f"{settings.DEFAULT_MAX_TUNNELS} (default)"

    @admin.display(description="effective port range")
    def effective_port_range(self, user: User) -> str:
        low, high = user.port_range
        if user.is_staff:
            return f"{low}-{high} (staff may listen on any port)"
        own = user.local_port_min is not None and user.local_port_max is not None
        source = "this user's own range" if own else "the server-wide pool"
        return f"{low}-{high} ({source})"


# --- credentials ---------------------------------------------------------


class ScopesField(forms.MultipleChoiceField):
    """Scopes as checkboxes; the default (read, operate, write) is what the API gives a new token."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("initial", list(DEFAULT_SCOPES))
        kwargs.setdefault("help_text", "admin: other users' objects and the users API; only staff users have it.")
        super().__init__(choices=[(s, s) for s in ALL_SCOPES], widget=forms.CheckboxSelectMultiple, **kwargs)

    def clean(self, value) -> list[str]:
        return sorted(set(super().clean(value)))


class CredentialForm(forms.ModelForm):
    """Shared by tokens and access keys: the scopes the credential's user may hold."""

    scopes = ScopesField()

    def clean(self) -> dict:
        data = super().clean()
        user = data.get("user") or getattr(self.instance, "user", None)
        if user is not None and (problem := tokens.scope_problem(user, data.get("scopes", []))):
            self.add_error("scopes", problem)
        return data


class TokenAddForm(CredentialForm):
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Empty: the token never expires."
    )

    class Meta:
        model = ApiToken
        fields = ["user", "label", "kind", "scopes"]


class TokenChangeForm(CredentialForm):
    class Meta:
        model = ApiToken
        fields = ["label", "scopes", "expires_at", "revoked_at"]


def _show_created(
    admin_page: admin.ModelAdmin, request, obj, *, what: str, fields: list[tuple[str, str]], usage: str
) -> TemplateResponse:
    """The one page that shows a new credential's secret (no redirect: it never sits in a message cookie)."""
    context = {
        **admin_page.admin_site.each_context(request),  # header, user links, theme like every admin page
        "title": f"{what} created",
        "opts": admin_page.opts,
        "what": what,
        "fields": fields,
        "usage": usage,
        "object": obj,
        "has_view_permission": True,
    }
    return TemplateResponse(request, CREATED_TEMPLATE, context)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "label", "kind", "scopes", "created_at", "last_used_at", "expires_at")
    list_display += ("revoked_at",)
    list_filter = ("kind", "created_at", "revoked_at")
    list_select_related = ("user",)
    search_fields = ("label", "lookup", "user__username")
    raw_id_fields = ("user",)
    # Only the lookup part is shown; the digest and pepper id are of no use to anybody reading.
    readonly_fields = ("user", "prefix", "kind", "created_at", "last_used_at")
    actions = ["revoke_tokens"]

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset) -> None:
        revoked = 0
        for token in tokens.unrevoked(queryset):
            tokens.revoke(token)
            revoked += 1
        messages.info(request, f"{revoked} revoked (they stop working at once)")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = TokenChangeForm if obj is not None else TokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "label", "kind", "scopes", "expires_in_days"]
        return ["user", "prefix", "label", "kind", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request) -> dict:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        days = form.cleaned_data.get("expires_in_days")
        token, raw = tokens.mint(
            obj.user, label=obj.label, scopes=obj.scopes, kind=obj.kind, expires_in=days * 86400 if days else None
        )
        # The admin goes on with ``obj`` (history entry, answer): make it the minted row.
        obj.__dict__.update(token.__dict__)
        obj.raw_token = raw

    def response_add(self, request, obj: ApiToken, post_url_continue=None):
        usage = "Send it as Authorization: Bearer <token>. Copy it now: it is not shown again."
        fields = [("token", obj.raw_token), ("prefix", obj.prefix), ("user", obj.user.username)]
        return _show_created(self, request, obj, what="API token", fields=fields, usage=usage)


class AccessKeyAddForm(CredentialForm):
    class Meta:
        model = AccessKey
        fields = ["user", "label", "scopes"]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("user") is not None:
            try:
                keys.check_room(data["user"])
            except ServiceError as exc:
                self.add_error("user", exc.message)
        return data


class AccessKeyChangeForm(CredentialForm):
    class Meta:
        model = AccessKey
        fields = ["label", "scopes", "is_active"]


@admin.register(AccessKey)
class AccessKeyAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "label", "scopes", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    list_select_related = ("user",)
    search_fields = ("label", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("user", "created_at", "last_used_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = AccessKeyChangeForm if obj is not None else AccessKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "label", "scopes"]
        return ["user", "label", "scopes", "is_active", "created_at", "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request) -> dict:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj: AccessKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # keys.create checks the limit again under the user's row lock; the admin's view runs in
        # one transaction, so a refusal here rolls the whole add back.
        key, secret = keys.create(obj.user, label=obj.label, scopes=obj.scopes)
        obj.__dict__.update(key.__dict__)
        obj.raw_secret = secret

    def response_add(self, request, obj: AccessKey, post_url_continue=None):
        usage = "Sign requests with the key id and this secret (README: HTTP Signatures). Copy it now."
        fields = [("key id", str(obj.pk)), ("secret", obj.raw_secret), ("user", obj.user.username)]
        return _show_created(self, request, obj, what="Access key", fields=fields, usage=usage)


@admin.register(ApiRequest)
class ApiRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "method", "path", "status", "duration_ms", "client_address")
    list_filter = ("method", "status")
    list_select_related = ("user",)
    search_fields = ("path", "user__username", "token_label")
    raw_id_fields = ("user", "token")
    date_hierarchy = "created_at"
