from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import AccessKey, ApiRequest, ApiToken, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "max_tunnels", "date_joined")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        (
            "Quotas",
            {
                "fields": (
                    "max_tunnels",
                    "local_port_min",
                    "local_port_max",
                    "effective_port_range",
                    "allow_nonloopback_bind",
                ),
                "description": "Leave both local port fields empty for the server-wide pool "
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
    readonly_fields = ("effective_port_range",)

    @admin.display(description="effective port range")
    def effective_port_range(self, user: User) -> str:
        low, high = user.port_range
        if user.is_staff:
            return f"{low}-{high} (staff may listen on any port)"
        own = user.local_port_min is not None and user.local_port_max is not None
        source = "this user's own range" if own else "the server-wide pool"
        return f"{low}-{high} ({source})"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "label", "kind", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("kind", "created_at", "revoked_at")
    list_select_related = ("user",)
    search_fields = ("label", "lookup", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("lookup", "digest", "pepper_id", "created_at", "last_used_at")


@admin.register(AccessKey)
class AccessKeyAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "label", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    list_select_related = ("user",)
    search_fields = ("label", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_used_at")


@admin.register(ApiRequest)
class ApiRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "method", "path", "status", "duration_ms", "client_address")
    list_filter = ("method", "status")
    list_select_related = ("user",)
    search_fields = ("path", "user__username", "token_label")
    raw_id_fields = ("user", "token")
    date_hierarchy = "created_at"
