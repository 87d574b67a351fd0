"""Shapes of the autossh-compatible API (COMPAT.md "Shapes").

Responses are built by the ``*_item`` functions below (plain dicts: lists of a
thousand tunnels must stay cheap); the serializers describe the same shapes in
OpenAPI and are pinned to the functions by tests. Request bodies are validated by
``tunnels.services`` / ``tunnels.validation``, never here.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tunnels.models import DIRECTION_CHOICES, Status, Tunnel

PORT_HELP = 'A port (`"8080"`) or `host:port`; requests may send a number.'


# --- builders -----------------------------------------------------------


CONFIG_COLUMNS = (
    *("name", "remote_host", "remote_port", "local_port", "direction", "interactive", "hash"),
    *("ssh_port", "auto_restart", "ssh_key_id"),
)


def config_row(row: tuple) -> dict[str, Any]:
    """A tunnel object from ``values_list(*CONFIG_COLUMNS)`` (``/config`` lists a thousand without models).

    tunnelsite's own settings appear only when not at their default, so a GET-edit-POST
    round trip of ``/config`` keeps them and the original's shape is otherwise unchanged.
    """
    item = dict(zip(CONFIG_COLUMNS[:7], row[:7], strict=True))
    ssh_port, auto_restart, ssh_key = row[7:]
    if ssh_port is not None:
        item["ssh_port"] = ssh_port
    if not auto_restart:
        item["auto_restart"] = False
    if ssh_key is not None:
        item["ssh_key"] = str(ssh_key)
    return item


def config_item(tunnel: Tunnel) -> dict[str, Any]:
    return config_row(tuple(getattr(tunnel, column) for column in CONFIG_COLUMNS))


# The original knows four states; its panel and clients written for it show nothing else.
# tunnelsite's richer states stay in the REST API (and in the text of ``output``).
COMPAT_STATUS = {
    Status.RUNNING: "RUNNING",
    Status.STARTING: "STARTING",
    Status.STOPPED: "STOPPED",
    Status.BACKOFF: "DEAD",  # died, waiting to retry
    Status.FAILED: "DEAD",
    # An interactive tunnel whose login ended: not running, and not coming back by itself.
    Status.NEEDS_AUTH: "DEAD",
}


def list_item(name: str, status: str, local_port: str, remote_host: str, remote_port: str, hash: str) -> dict:
    return {
        "name": name,
        "status": status,
        "local_port": local_port,
        "remote_host": remote_host,
        "remote_port": remote_port,
        "hash": hash,
    }


# --- schema -------------------------------------------------------------


class TunnelInputSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, help_text="Default `unnamed`.")
    remote_host = serializers.CharField(help_text="`user@host` or an ssh alias.")
    remote_port = serializers.CharField(help_text=PORT_HELP)
    local_port = serializers.CharField(help_text=PORT_HELP)
    direction = serializers.ChoiceField(DIRECTION_CHOICES, required=False, help_text="Default `remote_to_local`.")
    interactive = serializers.BooleanField(required=False, help_text="Default false.")
    ssh_port = serializers.IntegerField(
        required=False, allow_null=True, help_text="tunnelsite extension: the SSH server's port."
    )
    auto_restart = serializers.BooleanField(
        required=False, help_text="tunnelsite extension: bring the tunnel back when it dies (default true)."
    )
    ssh_key = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="tunnelsite extension: id of one of your SSH keys, or null. Left out, an existing tunnel keeps "
        "its key and a new one gets your only key when you have exactly one.",
    )


class NewTunnelInputSerializer(TunnelInputSerializer):
    name = serializers.CharField(help_text="Required by `POST /config/new`.")


class EditInputSerializer(TunnelInputSerializer):
    hash = serializers.CharField(required=False, help_text="Hash (or 8+ character prefix) to update; omit to add.")


class ReplaceAllInputSerializer(serializers.Serializer):
    tunnels = TunnelInputSerializer(many=True)


class CompatTunnelSerializer(serializers.Serializer):
    name = serializers.CharField()
    remote_host = serializers.CharField()
    remote_port = serializers.CharField()
    local_port = serializers.CharField()
    direction = serializers.ChoiceField(DIRECTION_CHOICES)
    interactive = serializers.BooleanField()
    hash = serializers.CharField(help_text="md5 of the six fields; changes when they change.")
    ssh_port = serializers.IntegerField(required=False, help_text="Only when set.")
    auto_restart = serializers.BooleanField(required=False, help_text="Only when false.")
    ssh_key = serializers.UUIDField(required=False, help_text="tunnelsite extension: the SSH key's id, only when set.")


class ConfigListSerializer(serializers.Serializer):
    tunnels = CompatTunnelSerializer(many=True)


class ListItemSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField(
        help_text="`/list`: `NORMAL` or `INTERACTIVE`. `/status`: the observed state in the original's words: "
        "`RUNNING`, `STARTING`, `STOPPED` or `DEAD` (failed, waiting to retry, or an interactive tunnel whose "
        "login ended; `GET /api/v1/tunnels/` tells which and why)."
    )
    local_port = serializers.CharField()
    remote_host = serializers.CharField()
    remote_port = serializers.CharField()
    hash = serializers.CharField()


class OutputSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`success`.")
    output = serializers.CharField(help_text="Plain text, one line per fact.")


class TunnelOutputSerializer(OutputSerializer):
    tunnel_hash = serializers.CharField(help_text="The full hash.")


class MessageSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`success`.")
    message = serializers.CharField()


class EditResultSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`success`.")
    action = serializers.ChoiceField(["added", "updated", "deleted"])
    hash = serializers.CharField(required=False, help_text="`added`, `deleted`.")
    old_hash = serializers.CharField(required=False, help_text="`updated`.")
    new_hash = serializers.CharField(required=False, help_text="`updated`.")


class LogFileSerializer(serializers.Serializer):
    hash = serializers.CharField()
    filename = serializers.CharField(help_text="`tunnel-<hash>.log`.")
    size = serializers.CharField(help_text="Like `du -h`: `4.0K`.")
    modified = serializers.CharField(help_text="`YYYY-MM-DD HH:MM:SS` (server time zone).")


class LogSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`success`.")
    tunnel_hash = serializers.CharField()
    log = serializers.CharField(help_text="The last lines (`?lines=`, default 100).")


class CompatErrorSerializer(serializers.Serializer):
    error = serializers.CharField()


class CompatThrottledSerializer(CompatErrorSerializer):
    retry_after = serializers.IntegerField(help_text="Seconds to wait before trying again.")


class UnauthorizedSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="`Unauthorized`.")
    message = serializers.CharField(help_text="`Valid Bearer token required`.")
