"""Admin pages of the records tunnels leave: sessions, configuration backups, connection tests."""

from __future__ import annotations

from django.contrib import admin
from django.db import transaction

from tunnels import backups
from tunnels.models import ConfigBackup, ConnectionTest, TunnelSession


@admin.register(TunnelSession)
class TunnelSessionAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "hash", "pid", "node", "started_at", "ended_at", "exit_reason")
    list_filter = ("exit_reason", "node", "direction")
    list_select_related = ("owner",)
    search_fields = ("name", "hash", "owner__username")
    raw_id_fields = ("tunnel", "owner", "requested_by", "token", "ended_by")
    date_hierarchy = "started_at"

    # The worker records sessions; a hand-made or edited one would be a false history.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ConfigBackup)
class ConfigBackupAdmin(admin.ModelAdmin):
    list_display = ("created_at", "owner", "reason", "file_name")
    list_select_related = ("owner",)
    search_fields = ("owner__username", "reason")
    raw_id_fields = ("owner", "actor")
    readonly_fields = ("tunnels", "file_name", "created_at")

    def get_queryset(self, request):
        # The change list never shows the snapshot; loading it would decode every row's JSON.
        return super().get_queryset(request).defer("tunnels")

    # Backups are taken by the service layer before every change (a row here has a file on disk).
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj: ConfigBackup) -> None:
        self.delete_queryset(request, ConfigBackup.objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset) -> None:
        names = list(queryset.values_list("file_name", flat=True))
        queryset.delete()
        transaction.on_commit(lambda: backups.delete_files(names))  # the file goes with its row


@admin.register(ConnectionTest)
class ConnectionTestAdmin(admin.ModelAdmin):
    """Read-only: tests are requested with the tunnels' "Test connection" action and run by a worker."""

    list_display = ("created_at", "tunnel", "owner", "state", "ok", "step", "detail", "node", "finished_at")
    list_filter = ("state", "ok", "step")
    list_select_related = ("tunnel", "owner")
    search_fields = ("tunnel__name", "owner__username", "detail")
    raw_id_fields = ("tunnel", "owner", "requested_by")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
