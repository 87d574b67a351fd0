"""Admin pages of SSH identities: users' keys (generated through the service layer) and known hosts."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count

from tunnels import hostkeys, services, services_keys, sshkeys
from tunnels.models import KnownHost, SshKey


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
