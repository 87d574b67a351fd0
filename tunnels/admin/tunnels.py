"""The tunnels' admin: a list operators can read at a glance, and changes through the service layer."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from tunnels import logfiles, preflight, services, services_owner
from tunnels.admin import nodes
from tunnels.admin.badges import ORANGE, RED, STATUS_COLORS, badge
from tunnels.admin.prompt import LoginPromptAdmin
from tunnels.models import REMOTE_TO_LOCAL, Desired, Tunnel, TunnelSession, WorkerNode
from tunnels.validation import CONFIG_FIELDS, TunnelDataError, clean_tunnel_data

LOG_LINES = 50  # lines of the log shown on the change page
RECENT_SESSIONS = 10  # sessions shown on the change page (the sessions list has them all)
ERROR_CHARS = 48  # of the last error in the list; the whole text is on hover
EDITABLE = ["owner", *CONFIG_FIELDS, "ssh_key", "desired_state"]
STATE_FIELDS = (
    "status_badge",
    "status_changed_at",
    "last_error",
    "pid",
    "node",
    "started_at",
    "restart_count",
    "consecutive_failures",
    "backoff_until",
    "desired_changed_at",
    "desired_by",
    "desired_by_token",
)
INTERNAL_FIELDS = ("uuid", "hash", "generation", "running_generation", "process_create_time", "listen_port")
INTERNAL_FIELDS += ("created_at", "updated_at")


class TunnelAdminForm(forms.ModelForm):
    """Runs the service layer's rules so the admin shows them as form errors."""

    class Meta:
        model = Tunnel
        fields = EDITABLE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["local_port"].required = False
            self.fields[
                "local_port"
            ].help_text = "Leave empty for an -L tunnel to get the first free port of the owner's range."
        else:
            self.fields["owner"].help_text = (
                "Moving a tunnel checks the new owner's tunnel limit, port range and network grants, "
                "backs up both owners' configurations and restarts it if it runs. Its SSH key belongs "
                "to the old owner: choose one of the new owner's keys (or none) with the move."
            )

    def clean(self) -> dict:
        data = super().clean()
        try:
            self._check(data)
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

    def _check(self, data: dict) -> None:
        """What the save would refuse, found before anything is written (the save checks again)."""
        config = {field: data.get(field) for field in CONFIG_FIELDS}
        cleaned = clean_tunnel_data(config, assign_port=not self.instance.pk)
        owner = data.get("owner")
        if not owner:
            return
        services.check_policy(owner, cleaned)
        services.check_port_free(cleaned, self.instance.pk)
        stored = Tunnel.objects.select_related("owner").get(pk=self.instance.pk) if self.instance.pk else None
        if stored is not None and stored.owner_id != owner.pk:
            services_owner.check_owner_change(stored, owner, data.get("ssh_key"))
        else:
            services.resolve_key(owner, data.get("ssh_key"))  # only the owner's keys


def _apply_desired(tunnel: Tunnel, desired: str, actor: services.Actor) -> None:
    if desired == tunnel.desired_state:
        return
    if desired == Desired.RUNNING:
        services.request_start(tunnel, actor)
    else:
        services.request_stop(tunnel, actor)


@admin.register(Tunnel)
class TunnelAdmin(LoginPromptAdmin, admin.ModelAdmin):
    form = TunnelAdminForm
    # Few, narrow columns so the list fits 1280 px; the change page has everything.
    list_display = (
        "tunnel_name",
        "owner",
        "flag",
        "status_badge",
        "desired_state",
        "error_short",
        "restarts",
        "node_name",
        "hash_prefix",
    )
    list_filter = (
        "status",
        "desired_state",
        "direction",
        ("owner", admin.RelatedOnlyFieldListFilter),
        "node",
        "interactive",
    )
    list_select_related = ("owner",)
    search_fields = ("name", "hash", "remote_host", "owner__username")
    raw_id_fields = ("owner", "ssh_key")
    actions = ["start_tunnels", "stop_tunnels", "restart_tunnels", "test_connections"]

    # --- columns ------------------------------------------------------------

    @admin.display(description="name", ordering="name")
    def tunnel_name(self, obj: Tunnel) -> SafeString:
        return format_html('<span style="white-space:nowrap">{}</span>', obj.name)

    def get_queryset(self, request):
        # When the node running a tunnel last reported, in the list's one query (no query per row).
        seen = WorkerNode.objects.filter(name=OuterRef("node")).values("last_seen")[:1]
        return super().get_queryset(request).annotate(node_seen=Subquery(seen))

    @admin.display(description="node", ordering="node")
    def node_name(self, obj: Tunnel) -> SafeString:
        name = format_html('<span style="white-space:nowrap">{}</span>', obj.node)
        seen = getattr(obj, "node_seen", None)
        if not obj.node or (seen is not None and not nodes.is_stale(WorkerNode(last_seen=seen))):
            return name
        why = "this node has not reported within the worker lease: its tunnels may be taken over"
        return format_html("{} {}", name, badge("stale", RED, why))

    @admin.display(description="restarts", ordering="restart_count")
    def restarts(self, obj: Tunnel) -> int:
        return obj.restart_count

    @admin.display(description="hash")
    def hash_prefix(self, obj: Tunnel) -> str:
        return obj.hash[:8]

    @admin.display(description="ssh", ordering="direction")
    def flag(self, obj: Tunnel) -> str:
        return "-L" if obj.direction == REMOTE_TO_LOCAL else "-R"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Tunnel) -> SafeString:
        reason = obj.last_error or f"{obj.status} since {obj.status_changed_at:%Y-%m-%d %H:%M:%S %Z}"
        shown = badge(obj.status, STATUS_COLORS.get(obj.status, "#5f6368"), reason)
        if not obj.holds_its_port:
            lost = f"another tunnel holds port {obj.local_port}: change its local_port to run it"
            shown = format_html("{} {}", shown, badge("no port", ORANGE, lost))
        return shown

    @admin.display(description="last error")
    def error_short(self, obj: Tunnel) -> SafeString | str:
        if not obj.last_error:
            return ""
        short = Truncator(obj.last_error).chars(ERROR_CHARS)
        return format_html('<span title="{}">{}</span>', obj.last_error, short)

    # --- change page --------------------------------------------------------

    def get_changeform_initial_data(self, request) -> dict:
        # A tunnel an operator adds is theirs unless they pick someone; new ones start stopped
        # unless asked, as the form shows.
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    def get_fieldsets(self, request, obj: Tunnel | None = None):
        if obj is None:
            return [(None, {"fields": EDITABLE})]  # internal and worker-owned fields stay hidden
        return [
            ("Configuration", {"fields": EDITABLE}),
            ("State (set by the worker)", {"fields": STATE_FIELDS}),
            ("Log", {"fields": ("log_tail",)}),
            ("Recent sessions", {"fields": ("recent_sessions",)}),
            ("Internal", {"fields": INTERNAL_FIELDS, "classes": ("collapse",)}),
        ]

    def get_readonly_fields(self, request, obj: Tunnel | None = None):
        if obj is None:
            return ()
        return (*STATE_FIELDS, "log_tail", "recent_sessions", *INTERNAL_FIELDS)

    @admin.display(description=f"last {LOG_LINES} lines")
    def log_tail(self, obj: Tunnel) -> SafeString:
        try:
            text = logfiles.tail_lines(obj.log_path, LOG_LINES)
        except FileNotFoundError:
            text = ""
        style = "max-height:28em;overflow:auto;white-space:pre-wrap;margin:0"
        return format_html('<pre style="{}">{}</pre>', style, text or "(no log yet)")

    @admin.display(description="sessions")
    def recent_sessions(self, obj: Tunnel) -> SafeString:
        sessions = TunnelSession.objects.filter(tunnel=obj).order_by("-started_at")[:RECENT_SESSIONS]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td title='{}'>{}</td></tr>",
            (
                (
                    f"{s.started_at:%Y-%m-%d %H:%M:%S}",
                    f"{s.ended_at:%Y-%m-%d %H:%M:%S}" if s.ended_at else "running",
                    s.pid or "",
                    s.node,
                    s.exit_reason,
                    s.exit_detail,
                    Truncator(s.exit_detail).chars(ERROR_CHARS),
                )
                for s in sessions
            ),
        )
        every = reverse("admin:tunnels_tunnelsession_changelist") + f"?tunnel__id__exact={obj.pk}"
        head = "<tr><th>started</th><th>ended</th><th>pid</th><th>node</th><th>exit</th><th>detail</th></tr>"
        if not rows:
            return format_html('No sessions yet. <a href="{}">Sessions list</a>', every)
        return format_html(
            '<table class="ts-sessions">' + head + '{}</table><a href="{}">All sessions of this tunnel</a>',
            rows,
            every,
        )

    # --- saving through the service layer -----------------------------------

    def save_model(self, request, obj: Tunnel, form, change: bool) -> None:
        data = {field: getattr(obj, field) for field in CONFIG_FIELDS}
        if change or obj.ssh_key_id:
            # A new tunnel with no key chosen gets the default (the owner's only key).
            data[services.KEY_FIELD] = obj.ssh_key_id
        actor = services.Actor(user=request.user)
        try:
            with transaction.atomic():  # a refusal half-way changes nothing
                if change:
                    saved = self._save_change(obj, data, actor)
                else:
                    start = obj.desired_state == Desired.RUNNING
                    saved = services.create_tunnel(obj.owner, data, actor, start=start, assign_port=True)
        except services.ServiceError as exc:
            # Raced past the form's checks (e.g. a duplicate or a port taken meanwhile).
            messages.error(request, exc.message)
            return
        obj.pk, obj.hash, obj.local_port = saved.pk, saved.hash, saved.local_port

    @staticmethod
    def _save_change(obj: Tunnel, data: dict, actor: services.Actor) -> Tunnel:
        stored = Tunnel.objects.select_related("owner").get(pk=obj.pk)
        if obj.owner_id != stored.owner_id:
            stored = services_owner.change_owner(stored, obj.owner, actor, ssh_key=obj.ssh_key_id)
        saved = services.update_tunnel(stored, data, actor)
        _apply_desired(saved, obj.desired_state, actor)
        return saved

    def delete_model(self, request, obj: Tunnel) -> None:
        services.delete_tunnel(obj, services.Actor(user=request.user))

    def delete_queryset(self, request, queryset) -> None:
        for tunnel in queryset:
            services.delete_tunnel(tunnel, services.Actor(user=request.user))

    # --- bulk actions -------------------------------------------------------

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

    @admin.action(description="Restart selected tunnels")
    def restart_tunnels(self, request, queryset) -> None:
        actor, restarted, skipped = services.Actor(user=request.user), 0, []
        for tunnel in queryset:
            try:
                services.request_restart(tunnel, actor, interactive_ok=False)
                restarted += 1
            except services.NotRunnable as exc:
                skipped.append(exc.message)
        messages.info(request, f"{restarted} asked to restart, {len(skipped)} skipped")
        for problem in skipped:
            messages.warning(request, problem)

    @admin.action(description="Test connection of selected tunnels")
    def test_connections(self, request, queryset) -> None:
        tests, skipped = preflight.request_tests(queryset, services.Actor(user=request.user))
        results = reverse("admin:tunnels_connectiontest_changelist")
        text = "{} connection tests requested ({} interactive skipped); a worker runs them within seconds: "
        messages.info(
            request, format_html(text + '<a href="{}">see Connection tests</a>', len(tests), len(skipped), results)
        )
