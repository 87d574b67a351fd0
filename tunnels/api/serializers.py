"""Shapes of the REST API v1. Read shapes only, plus request shapes for the docs.

Write requests are not validated here: views hand the raw body to
``tunnels.services``, which validates through ``tunnels.validation`` (one place
for the rules). The request serializers below only describe the body in OpenAPI.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.permissions import acts_as_admin
from tunnels import prompts
from tunnels.models import DIRECTION_CHOICES, ConfigBackup, Desired, Status, Tunnel, TunnelSession, listen_address

DATETIME = serializers.DateTimeField()


# --- tunnels ------------------------------------------------------------


class TunnelSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True, help_text="Stable public id (use it in URLs).")
    owner = serializers.CharField(source="owner.username", read_only=True)
    connected_since = serializers.SerializerMethodField(
        help_text="When the running process started; null if not running."
    )
    listen = serializers.CharField(
        read_only=True,
        help_text=(
            "Entry point: `127.0.0.1:18080` (ssh -L), or the address ssh asks the SSH server to listen on "
            "(ssh -R: `localhost:PORT` unless `remote_port` names an address)."
        ),
    )
    hash = serializers.CharField(read_only=True, help_text="autossh-compatible hash; changes when the config changes.")
    ssh_key = serializers.UUIDField(
        source="ssh_key_id", read_only=True, allow_null=True, help_text="Id of the SSH key it authenticates with."
    )
    ssh_key_name = serializers.CharField(read_only=True, allow_null=True, help_text="That key's name.")
    prompt_pending = serializers.SerializerMethodField(
        help_text="An interactive tunnel's ssh is asking a question (password, code) now: answer it at "
        "`/api/v1/tunnels/{id}/prompt/`.",
    )

    class Meta:
        model = Tunnel
        fields = [
            "id",
            "name",
            "owner",
            "remote_host",
            "remote_port",
            "local_port",
            "direction",
            "interactive",
            "prompt_pending",
            "ssh_port",
            "auto_restart",
            "ssh_key",
            "ssh_key_name",
            "desired_state",
            "status",
            "pid",
            "last_error",
            "restart_count",
            "connected_since",
            "node",
            "hash",
            "listen",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_connected_since(self, tunnel: Tunnel) -> str | None:
        # DRF's own rendering: the reference tests/test_api_tunnels.py holds tunnel_item to.
        if tunnel.status != Status.RUNNING or tunnel.started_at is None:
            return None
        return DATETIME.to_representation(tunnel.started_at)

    @extend_schema_field(serializers.BooleanField())
    def get_prompt_pending(self, tunnel: Tunnel) -> bool:
        return tunnel.pk in self._asking(tunnel)

    def _asking(self, tunnel: Tunnel) -> Collection[int]:
        # A list's caller may pass the pending set of all its tunnels (one query): context "prompt_pending".
        asking = self.context.get("prompt_pending")
        if asking is None:
            asking = prompts.pending_ids([tunnel.pk]) if tunnel.interactive else set()
        return asking

    def to_representation(self, tunnel: Tunnel) -> dict:
        return tunnel_item(instance_row(tunnel), asking=self._asking(tunnel))


# The columns an item is built from. The list endpoint reads exactly these with
# ``values()``: building model instances cost more than the query itself.
ITEM_COLUMNS = (
    "id",
    *("uuid", "name", "owner__username", "remote_host", "remote_port", "local_port", "direction", "interactive"),
    *("ssh_port", "auto_restart", "desired_state", "status", "pid", "last_error", "restart_count", "started_at"),
    *("node", "hash", "created_at", "updated_at", "ssh_key_id", "ssh_key__name"),
)


def instance_row(tunnel: Tunnel) -> dict[str, Any]:
    """A model instance as the ``values()`` row the item builder reads."""
    row = {column: getattr(tunnel, column) for column in ITEM_COLUMNS if "__" not in column}
    row["owner__username"] = tunnel.owner.username
    row["ssh_key__name"] = tunnel.ssh_key.name if tunnel.ssh_key_id else None
    return row


def iso_datetime(value: datetime | None, zone: tzinfo) -> str | None:
    """DRF's ISO 8601 rendering (``...Z`` for UTC) without its per-call settings lookups."""
    if value is None:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def tunnel_item(
    row: Mapping[str, Any], zone: tzinfo | None = None, asking: Collection[int] = frozenset()
) -> dict[str, Any]:
    """One tunnel as the API shows it, from its ``ITEM_COLUMNS``.

    Written out by hand: lists serialize hundreds of tunnels and DRF's per-field
    machinery cost ~55 us per tunnel. The fields declared on TunnelSerializer stay
    the schema; tests/test_api_tunnels.py pins the two together. ``asking``: the ids of
    tunnels whose login prompt is pending (``prompts.pending_ids``).
    """
    zone = zone or timezone.get_current_timezone()
    running = row["status"] == Status.RUNNING
    return {
        "id": str(row["uuid"]),
        "name": row["name"],
        "owner": row["owner__username"],
        "remote_host": row["remote_host"],
        "remote_port": row["remote_port"],
        "local_port": row["local_port"],
        "direction": row["direction"],
        "interactive": row["interactive"],
        "prompt_pending": row["id"] in asking,
        "ssh_port": row["ssh_port"],
        "auto_restart": row["auto_restart"],
        "ssh_key": str(row["ssh_key_id"]) if row["ssh_key_id"] else None,
        "ssh_key_name": row["ssh_key__name"],
        "desired_state": row["desired_state"],
        "status": row["status"],
        "pid": row["pid"],
        "last_error": row["last_error"],
        "restart_count": row["restart_count"],
        "connected_since": iso_datetime(row["started_at"], zone) if running else None,
        "node": row["node"],
        "hash": row["hash"],
        "listen": listen_address(row["direction"], row["local_port"], row["remote_port"], row["remote_host"]),
        "created_at": iso_datetime(row["created_at"], zone),
        "updated_at": iso_datetime(row["updated_at"], zone),
    }


def tunnel_items(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = list(rows)
    zone = timezone.get_current_timezone()
    asking = pending_of(rows)
    return [tunnel_item(row, zone, asking) for row in rows]


def pending_of(rows: Iterable[Mapping[str, Any]]) -> set[int]:
    """Which of these rows' tunnels have a login prompt pending: one query, and none without interactive tunnels."""
    return prompts.pending_ids([row["id"] for row in rows if row["interactive"]])


class TunnelActionSerializer(TunnelSerializer):
    output = serializers.CharField(
        read_only=True,
        help_text="One line saying what the worker did: `started, pid 123`, `stopped`, `failed: …` or `queued: …`.",
    )

    class Meta(TunnelSerializer.Meta):
        fields = [*TunnelSerializer.Meta.fields, "output"]
        read_only_fields = fields

    def to_representation(self, tunnel: Tunnel) -> dict:
        return {**super().to_representation(tunnel), "output": tunnel.output}


class StartSerializer(serializers.Serializer):
    """Request body of a start (documentation only; ``tunnels.prompts.check_responses`` validates)."""

    responses = serializers.ListField(
        child=serializers.CharField(max_length=prompts.MAX_ANSWER, trim_whitespace=False),
        required=False,
        max_length=prompts.MAX_RESPONSES,
        help_text="Interactive tunnels only: answers to ssh's prompts, in the order it asks them (password, "
        "then code). They travel to the server and wait there encrypted until ssh asks; a prompt without an "
        "answer here is asked at `/api/v1/tunnels/{id}/prompt/`.",
    )


class TunnelWriteSerializer(serializers.Serializer):
    """Request body of create/update (documentation only; the service layer validates)."""

    name = serializers.CharField(required=False, max_length=100, help_text="Default `unnamed`.")
    remote_host = serializers.CharField(max_length=255, help_text="`user@host` or an ssh alias.")
    remote_port = serializers.CharField(help_text='`port` or `host:port` (a JSON number is accepted too), e.g. "8080".')
    local_port = serializers.CharField(help_text='`port` or `ip:port` / `[ipv6]:port`, e.g. "18080".')
    direction = serializers.ChoiceField(
        choices=DIRECTION_CHOICES,
        required=False,
        help_text="`remote_to_local` = ssh -L (default), `local_to_remote` = ssh -R.",
    )
    interactive = serializers.BooleanField(
        required=False,
        help_text="Needs a person to log in (password, one-time code): created stopped, started only on request, "
        "never restarted automatically; its prompts are answered at `/api/v1/tunnels/{id}/prompt/`.",
    )
    ssh_port = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=65535, help_text="SSH server port."
    )
    auto_restart = serializers.BooleanField(required=False, help_text="Bring the tunnel back when it drops (default).")
    ssh_key = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Id of one of your SSH keys (`/api/v1/ssh-keys/`), or null for none. Left out: an update keeps "
        "the current key; a new tunnel gets your only key when you have exactly one. Changing it restarts the tunnel.",
    )


class TunnelCreateSerializer(TunnelWriteSerializer):
    local_port = serializers.CharField(
        required=False,
        help_text='`port` or `ip:port` / `[ipv6]:port`, e.g. "28080": a port of your range no other tunnel holds. '
        "Left out (ssh -L only): the server assigns the lowest free port of your range on 127.0.0.1; "
        "the answer's `local_port` shows it.",
    )
    desired_state = serializers.ChoiceField(
        choices=Desired.choices,
        required=False,
        help_text="Default: `running` unless interactive. `stopped` creates it without starting it; an interactive "
        "tunnel created `running` begins its login at once (answer it at `/api/v1/tunnels/{id}/prompt/`).",
    )


class TunnelLogSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    hash = serializers.CharField()
    lines = serializers.IntegerField(help_text="Number of lines returned.")
    size = serializers.IntegerField(help_text="Size of the whole log file in bytes.")
    log = serializers.CharField(help_text="The last lines of the log.")


# --- history ------------------------------------------------------------


class HistoryEntrySerializer(serializers.ModelSerializer):
    """One process lifetime of a tunnel (rustunnel's history entry, adapted)."""

    tunnel_id = serializers.UUIDField(source="tunnel_uuid", help_text="The tunnel's id (kept after deletion).")
    session_id = serializers.UUIDField(source="id", help_text="Same as `id` (rustunnel field name).")
    label = serializers.CharField(source="listen", help_text="Same as `listen` (rustunnel field name).")
    owner = serializers.CharField(source="owner.username")
    token_id = serializers.SerializerMethodField(
        help_text="The API token that asked for the start, if any (null when it was another user's, e.g. staff)."
    )
    token_label = serializers.SerializerMethodField()
    registered_at = serializers.DateTimeField(source="started_at")
    unregistered_at = serializers.DateTimeField(source="ended_at", allow_null=True, help_text="Null while running.")

    class Meta:
        model = TunnelSession
        fields = [
            "id",
            "tunnel_id",
            "name",
            "hash",
            "direction",
            "label",
            "listen",
            "owner",
            "node",
            "pid",
            "session_id",
            "token_id",
            "token_label",
            "registered_at",
            "unregistered_at",
            "exit_reason",
            "exit_detail",
        ]
        read_only_fields = fields

    def shows_token(self, session: TunnelSession) -> bool:
        """A token is its user's to know about: when staff started someone's tunnel, the owner
        sees the session but not the staff member's token; staff acting as admin see it."""
        # The querysets select the token: this costs no query per entry.
        holder = session.token.user_id if session.token else session.requested_by_id
        if holder == session.owner_id:
            return True
        request = self.context.get("request")
        return request is not None and acts_as_admin(request)

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_token_id(self, session: TunnelSession) -> str | None:
        return str(session.token_id) if session.token_id and self.shows_token(session) else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_token_label(self, session: TunnelSession) -> str | None:
        return (session.token_label or None) if self.shows_token(session) else None


# --- backups ------------------------------------------------------------


class BackupTunnelSerializer(serializers.Serializer):
    name = serializers.CharField()
    remote_host = serializers.CharField()
    remote_port = serializers.CharField()
    local_port = serializers.CharField()
    direction = serializers.ChoiceField(choices=DIRECTION_CHOICES)
    interactive = serializers.BooleanField()
    hash = serializers.CharField()
    # Snapshots older than these two fields lack them; they are then left out.
    ssh_port = serializers.IntegerField(allow_null=True, required=False)
    auto_restart = serializers.BooleanField(required=False)
    ssh_key = serializers.UUIDField(allow_null=True, required=False, help_text="Left out by older snapshots.")


class BackupSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    actor = serializers.SerializerMethodField(help_text="Who made the change the backup was taken for.")
    tunnel_count = serializers.IntegerField(read_only=True, help_text="Tunnels in the snapshot.")

    class Meta:
        model = ConfigBackup
        fields = ["id", "owner", "created_at", "reason", "actor", "tunnel_count", "file_name"]
        read_only_fields = fields

    def get_actor(self, backup: ConfigBackup) -> str | None:
        return backup.actor.username if backup.actor_id else None


class BackupDetailSerializer(BackupSerializer):
    tunnels = BackupTunnelSerializer(many=True, read_only=True)

    class Meta(BackupSerializer.Meta):
        fields = [*BackupSerializer.Meta.fields, "tunnels"]
        read_only_fields = fields


class RestoreResultSerializer(serializers.Serializer):
    message = serializers.CharField()
    tunnels = TunnelSerializer(many=True)


# --- status -------------------------------------------------------------


class WorkerStatusSerializer(serializers.Serializer):
    node = serializers.CharField()
    last_seen = serializers.DateTimeField()
    tunnels = serializers.IntegerField(help_text="Tunnels running on this node.")
    error = serializers.CharField(
        help_text='A problem the node reports with its heartbeat ("database unreachable", "disk full: data dir"); '
        "empty when all is well."
    )
    error_since = serializers.DateTimeField(allow_null=True, help_text="Since when it reports `error`; null without.")


class ProblemSerializer(serializers.Serializer):
    node = serializers.CharField()
    error = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)


class StatusSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="False (HTTP 503) without a live worker or database.")
    active_tunnels = serializers.IntegerField(help_text="Tunnels observed running.")
    desired_tunnels = serializers.IntegerField(help_text="Tunnels meant to run.")
    workers = WorkerStatusSerializer(many=True, help_text="Workers with a heartbeat within the lease.")
    problems = ProblemSerializer(
        many=True,
        help_text="The errors live workers report (one entry per node with one); empty when none does. "
        "They do not turn `ok` false: the service still answers and acts where it can.",
    )
    version = serializers.CharField()
    error = serializers.CharField(required=False, help_text="Why `ok` is false.")
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait (the database did not answer).")


# --- sshreach-style calls -----------------------------------------------


class CallEnvelopeSerializer(serializers.Serializer):
    message = serializers.CharField(help_text='"OK", "online"/"offline", "success" or an error description.')
    error_code = serializers.IntegerField(
        help_text="0 ok, 11 not connected, 12 not disconnected, 21 invalid api call, 22 too many API calls, "
        "23 client blocked, 24 client inactive (offline), 31 wrong data."
    )
    success = serializers.BooleanField()


class AllowClientlessSerializer(CallEnvelopeSerializer):
    allow_clientless = serializers.BooleanField()
