"""Admin: reading is free, but configuration changes go through the service layer."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from tunnels import hostkeys, preflight, services, services_keys, sshkeys
from tunnels.models import ConfigBackup, ConnectionTest, KnownHost, SshKey, Tunnel, TunnelSession, WorkerNode
from tunnels.validation import CONFIG_FIELDS, TunnelDataError, clean_tunnel_data


class TunnelAdminForm(forms.ModelForm):
    """Runs the service layer's rules so the admin shows them as form errors."""

    class Meta:
        model = Tunnel
        fields = ["owner", *CONFIG_FIELDS, "ssh_key", "desired_state"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["local_port"].required = False
            self.fields[
                "local_port"
            ].help_text = "Leave empty for an -L tunnel to get the first free port of the owner's range."

    def clean(self) -> dict:
        data = super().clean()
        try:
            config = {field: data.get(field) for field in CONFIG_FIELDS}
            cleaned = clean_tunnel_data(config, assign_port=not self.instance.pk)
            if data.get("owner"):
                services.check_policy(data["owner"], cleaned)
                services.check_port_free(cleaned, self.instance.pk)
                services.resolve_key(data["owner"], data.get("ssh_key"))  # only the owner's keys
        except TunnelDataError as exc:
            for field, problems in exc.fields.items():
                self.add_error(field if field in self.fields else None, problems)
        except services.ServiceError as exc:
            for field, problems in (exc.fields or {}).items():
                if field in self.fields:
                    self.add_error(field, problems)
                    return data
            raise forms.ValidationError(exc.message) from None
        return data


@admin.register(Tunnel)
class TunnelAdmin(admin.ModelAdmin):
    form = TunnelAdminForm
    list_display = (
        "name",
        "owner",
        "hash_prefix",
        "direction",
        "local_port",
        "remote_host",
        "remote_port",
        "desired_state",
        "status",
        "pid",
        "node",
        "updated_at",
    )
    list_filter = ("status", "desired_state", "direction", "interactive", "node")
    list_select_related = ("owner",)
    search_fields = ("name", "hash", "remote_host", "owner__username")
    raw_id_fields = ("owner", "ssh_key")
    readonly_fields = (
        "uuid",
        "hash",
        "generation",
        "status",
        "status_changed_at",
        "pid",
        "process_create_time",
        "running_generation",
        "started_at",
        "last_error",
        "restart_count",
        "consecutive_failures",
        "backoff_until",
        "node",
        "desired_changed_at",
        "desired_by",
        "desired_by_token",
        "created_at",
        "updated_at",
    )
    actions = ["start_tunnels", "stop_tunnels", "test_connections"]

    @admin.display(description="hash")
    def hash_prefix(self, obj: Tunnel) -> str:
        return obj.hash[:8]

    def save_model(self, request, obj: Tunnel, form, change: bool) -> None:
        data = {field: getattr(obj, field) for field in CONFIG_FIELDS}
        if change or obj.ssh_key_id:
            # A new tunnel with no key chosen gets the default (the owner's only key).
            data[services.KEY_FIELD] = obj.ssh_key_id
        actor = services.Actor(user=request.user)
        try:
            if change:
                saved = services.update_tunnel(Tunnel.objects.get(pk=obj.pk), data, actor)
            else:
                saved = services.create_tunnel(obj.owner, data, actor, assign_port=True)
        except services.ServiceError as exc:
            # Raced past the form's checks (e.g. a duplicate or a port taken meanwhile).
            messages.error(request, exc.message)
            return
        obj.pk, obj.hash, obj.local_port = saved.pk, saved.hash, saved.local_port

    def delete_model(self, request, obj: Tunnel) -> None:
        services.delete_tunnel(obj, services.Actor(user=request.user))

    def delete_queryset(self, request, queryset) -> None:
        for tunnel in queryset:
            services.delete_tunnel(tunnel, services.Actor(user=request.user))

    @admin.action(description="Start selected tunnels")
    def start_tunnels(self, request, queryset) -> None:
        started, skipped = services.start_all(queryset, services.Actor(user=request.user))
        messages.info(
            request, f"{len(started)} asked to start, {len(skipped)} skipped (interactive, or without their port)"
        )

    @admin.action(description="Stop selected tunnels")
    def stop_tunnels(self, request, queryset) -> None:
        stopped = services.stop_all(queryset, services.Actor(user=request.user))
        messages.info(request, f"{len(stopped)} asked to stop")

    @admin.action(description="Test connection of selected tunnels")
    def test_connections(self, request, queryset) -> None:
        tests, skipped = preflight.request_tests(queryset, services.Actor(user=request.user))
        results = reverse("admin:tunnels_connectiontest_changelist")
        text = "{} connection tests requested ({} interactive skipped); a worker runs them within seconds: "
        messages.info(
            request, format_html(text + '<a href="{}">see Connection tests</a>', len(tests), len(skipped), results)
        )


@admin.register(TunnelSession)
class TunnelSessionAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "hash", "pid", "node", "started_at", "ended_at", "exit_reason")
    list_filter = ("exit_reason", "node", "direction")
    list_select_related = ("owner",)
    search_fields = ("name", "hash", "owner__username")
    raw_id_fields = ("tunnel", "owner", "requested_by", "token", "ended_by")
    date_hierarchy = "started_at"


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


@admin.register(WorkerNode)
class WorkerNodeAdmin(admin.ModelAdmin):
    list_display = ("name", "hostname", "pid", "version", "started_at", "last_seen")
    search_fields = ("name", "hostname")


# --- SSH keys ----------------------------------------------------------------


class SshKeyAddForm(forms.ModelForm):
    """Adding a key generates one through the service layer; key material is never typed in."""

    algorithm = forms.ChoiceField(
        choices=[(sshkeys.ED25519, "ed25519"), (sshkeys.RSA, f"rsa ({sshkeys.RSA_DEFAULT_BITS} bits)")]
    )

    class Meta:
        model = SshKey
        fields = ["owner", "name", "expires_at"]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        try:
            self.generated = services_keys.generate_key(
                data["owner"], data.get("name"), data.get("algorithm"), expires_at=data.get("expires_at")
            )
        except services.ServiceError as exc:
            raise forms.ValidationError(exc.message) from None
        # The form's model checks (unique name per owner...) now run on the saved key itself.
        self.instance = self.generated
        return data


@admin.register(SshKey)
class SshKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "algorithm",
        "fingerprint",
        "tunnel_count",
        "created_at",
        "last_used_at",
        "expires_at",
    )
    list_filter = ("algorithm", "created_at", "last_used_at", "expires_at")
    list_select_related = ("owner",)
    search_fields = ("name", "fingerprint", "comment", "owner__username")
    raw_id_fields = ("owner",)
    # The encrypted private key is never shown, on any page.
    exclude = ("private_key_encrypted",)
    shown = ("owner", "name", "algorithm", "bits", "public_key", "fingerprint", "comment")
    shown += ("created_at", "last_used_at", "expires_at")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(tunnel_count=Count("tunnels"))

    @admin.display(description="used by tunnels", ordering="tunnel_count")
    def tunnel_count(self, obj: SshKey) -> int:
        return getattr(obj, "tunnel_count", 0)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SshKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["owner", "name", "algorithm", "expires_at"] if obj is None else list(self.shown)

    def get_readonly_fields(self, request, obj=None):
        # A stored key is not edited in place: generate or upload a new one.
        return () if obj is None else self.shown

    def save_model(self, request, obj: SshKey, form, change: bool) -> None:
        # Adding: the form's clean() generated and saved the key (services_keys.generate_key);
        # changing: nothing on the page is editable. Either way there is nothing to save.
        return

    def delete_model(self, request, obj: SshKey) -> None:
        try:
            services_keys.delete_key(obj)
        except services.ServiceError as exc:
            messages.error(request, exc.message)

    def delete_queryset(self, request, queryset) -> None:
        for key in queryset:
            self.delete_model(request, key)


@admin.register(KnownHost)
class KnownHostAdmin(admin.ModelAdmin):
    """Reading is free; accepting and deleting go through ``tunnels.hostkeys``."""

    list_display = ("host", "port", "owner", "key_type", "fingerprint", "state", "source", "last_seen", "changed_at")
    list_filter = ("state", "source", "key_type")
    list_select_related = ("owner",)
    search_fields = ("host", "fingerprint", "offered_fingerprint", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = (
        "key",
        "fingerprint",
        "state",
        "offered_key",
        "offered_fingerprint",
        "source",
        "first_seen",
        "last_seen",
        "changed_at",
    )
    actions = ["accept_offered_keys"]

    def has_add_permission(self, request) -> bool:
        return False  # pinned through the API (ssh-keyscan output is validated there)

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # trust changes only by accepting or deleting

    def delete_model(self, request, obj: KnownHost) -> None:
        hostkeys.delete(obj)

    def delete_queryset(self, request, queryset) -> None:
        for known_host in queryset:
            hostkeys.delete(known_host)

    @admin.action(description="Accept the key the server now offers")
    def accept_offered_keys(self, request, queryset) -> None:
        accepted, refused = 0, []
        for known_host in queryset.select_related("owner"):
            try:
                hostkeys.accept(known_host)
                accepted += 1
            except services.ServiceError as exc:
                refused.append(f"{known_host.host}:{known_host.port} ({known_host.owner}): {exc.message}")
        messages.info(request, f"{accepted} accepted")
        for problem in refused:
            messages.warning(request, problem)
