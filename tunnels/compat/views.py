"""The autossh "SSH Tunnel Manager" HTTP API on tunnelsite (docs/COMPAT.md).

Each view translates one of the original's endpoints to ``tunnels.services``
calls; shapes, status codes and messages are the original's documented ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from accounts.models import SCOPE_OPERATE
from tunnels import services
from tunnels.api.base import WAIT_PARAM, positive_int, wait_seconds
from tunnels.compat import serializers as s
from tunnels.compat.base import BadBody, CompatView, plain
from tunnels.compat.logs import file_entry, tail_lines
from tunnels.models import Tunnel

LOG_LINES_DEFAULT = 100
LOG_LINES_MAX = 10_000
TAG = "autossh-compat"

PREFIX_PARAM = OpenApiParameter(
    "prefix", OpenApiTypes.STR, OpenApiParameter.PATH, description="The tunnel's hash or its first 8+ characters."
)
LINES_PARAM = OpenApiParameter(
    "lines", int, description=f"How many lines from the end (default {LOG_LINES_DEFAULT}, at most {LOG_LINES_MAX})."
)


def _error(description: str, serializer: Any = s.CompatErrorSerializer) -> OpenApiResponse:
    return OpenApiResponse(serializer, description=description)


BAD_REQUEST = _error("Bad body, bad field values, or a hash prefix that is too short or ambiguous.")
NOT_FOUND = _error("No tunnel of the caller's has this hash prefix.")
COMMON = {
    401: _error("No valid credentials.", s.UnauthorizedSerializer),
    403: _error("The credential lacks the scope, or a quota forbids the change."),
    405: _error("Wrong method."),
    429: _error("Too many requests."),
}


def compat_schema(operation_id: str, summary: str, responses: dict, **kwargs: Any) -> Callable:
    return extend_schema(
        tags=[TAG], operation_id=operation_id, summary=summary, responses={**responses, **COMMON}, **kwargs
    )


def _label(tunnel: Tunnel) -> str:
    return f"{tunnel.name} ({tunnel.hash})"


def _queue_note() -> str:
    if not services.live_workers().exists():
        return "queued: no worker is running"
    return "queued: the worker applies it within a second (GET /status shows progress)"


# --- list and status ----------------------------------------------------

LIST_COLUMNS = ("name", "local_port", "remote_host", "remote_port", "hash")


class ListView(CompatView):
    @compat_schema("compat_list", "List tunnels (configuration view)", {200: s.ListItemSerializer(many=True)})
    def get(self, request) -> Response:
        rows = self.tunnels().values_list("interactive", *LIST_COLUMNS)
        return Response([s.list_item(row[1], "INTERACTIVE" if row[0] else "NORMAL", *row[2:]) for row in rows])


class StatusView(CompatView):
    @compat_schema("compat_status", "Observed status of every tunnel", {200: s.ListItemSerializer(many=True)})
    def get(self, request) -> Response:
        rows = self.tunnels().values_list("status", *LIST_COLUMNS)
        return Response([s.list_item(row[1], row[0].upper(), *row[2:]) for row in rows])


# --- start / stop -------------------------------------------------------


class OperateView(CompatView):
    required_scopes = {"POST": SCOPE_OPERATE}


class StartAllView(OperateView):
    @compat_schema("compat_start_all", "Start every non-interactive tunnel", {200: s.OutputSerializer}, request=None)
    def post(self, request) -> Response:
        started, skipped = services.start_all(self.tunnels(), self.actor())
        lines = [f"Starting {len(started)} tunnel(s)"]
        lines += [f"start requested: {_label(t)}" for t in started]
        lines += [f"skipped (interactive, needs interactive authentication): {_label(t)}" for t in skipped]
        if started:
            lines.append(_queue_note())
        return Response({"status": "success", "output": plain("\n".join(lines))})


class StopAllView(OperateView):
    @compat_schema("compat_stop_all", "Stop every tunnel", {200: s.OutputSerializer}, request=None)
    def post(self, request) -> Response:
        stopped = services.stop_all(self.tunnels(), self.actor())
        lines = [f"Stopping {len(stopped)} tunnel(s)"]
        lines += [f"stop requested: {_label(t)}" for t in stopped]
        if stopped:
            lines.append(_queue_note())
        return Response({"status": "success", "output": plain("\n".join(lines))})


class OneTunnelOperateView(OperateView):
    want_running = True

    def post(self, request, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        wait = wait_seconds(request)
        if self.want_running:
            services.request_start(tunnel, self.actor())
        else:
            services.request_stop(tunnel, self.actor())
        verb = "Starting" if self.want_running else "Stopping"
        outcome = services.wait_for_outcome(tunnel, self.want_running, wait)
        output = f"{verb} tunnel: {_label(tunnel)}\n{outcome}"
        return Response({"status": "success", "tunnel_hash": tunnel.hash, "output": plain(output)})


ONE_RESPONSES = {200: s.TunnelOutputSerializer, 400: BAD_REQUEST, 404: NOT_FOUND}


class StartView(OneTunnelOperateView):
    want_running = True

    @compat_schema(
        "compat_start",
        "Start one tunnel and wait for the worker",
        {**ONE_RESPONSES, 409: _error("The tunnel is interactive: the worker cannot answer its prompt.")},
        request=None,
        parameters=[PREFIX_PARAM, WAIT_PARAM],
    )
    def post(self, request, prefix: str) -> Response:
        return super().post(request, prefix)


class StopView(OneTunnelOperateView):
    want_running = False

    @compat_schema(
        "compat_stop",
        "Stop one tunnel and wait for the worker",
        ONE_RESPONSES,
        request=None,
        parameters=[PREFIX_PARAM, WAIT_PARAM],
    )
    def post(self, request, prefix: str) -> Response:
        return super().post(request, prefix)


# --- configuration changes ----------------------------------------------


def update_data(tunnel: Tunnel, body: dict[str, Any]) -> dict[str, Any]:
    """The original's clients don't know tunnelsite's own settings: unsent ones keep their values."""
    return {"ssh_port": tunnel.ssh_port, "auto_restart": tunnel.auto_restart, **body}


class EditView(CompatView):
    @compat_schema(
        "compat_edit",
        "Add a tunnel, or update one when `hash` is given",
        {
            201: s.EditResultSerializer,
            200: s.EditResultSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: _error("The same configuration exists."),
        },
        request=s.EditInputSerializer,
    )
    def post(self, request) -> Response:
        body = self.json_body()
        old_hash = body.pop("hash", None)
        if old_hash in (None, ""):
            tunnel = services.create_tunnel(request.user, body, self.actor())
            return Response({"status": "success", "action": "added", "hash": tunnel.hash}, status=201)
        if not isinstance(old_hash, str):
            raise BadBody("hash must be a string")
        tunnel = self.resolve(old_hash)
        previous = tunnel.hash
        tunnel = services.update_tunnel(tunnel, update_data(tunnel, body), self.actor())
        return Response({"status": "success", "action": "updated", "old_hash": previous, "new_hash": tunnel.hash})


class DeleteView(CompatView):
    def _delete(self, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        services.delete_tunnel(tunnel, self.actor())
        return Response({"status": "success", "action": "deleted", "hash": tunnel.hash})

    @compat_schema(
        "compat_delete",
        "Delete a tunnel",
        {200: s.EditResultSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        parameters=[PREFIX_PARAM],
    )
    def delete(self, request, prefix: str) -> Response:
        return self._delete(prefix)

    @compat_schema(
        "compat_delete_post",
        "Delete a tunnel (POST, for clients without DELETE)",
        {200: s.EditResultSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        request=None,
        parameters=[PREFIX_PARAM],
    )
    def post(self, request, prefix: str) -> Response:
        return self._delete(prefix)


REPLACE_RESPONSES = {
    200: s.MessageSerializer,
    400: BAD_REQUEST,
    409: _error("Two entries have the same configuration."),
}


class ConfigView(CompatView):
    @compat_schema("compat_config", "Every tunnel's configuration", {200: s.ConfigListSerializer})
    def get(self, request) -> Response:
        rows = self.tunnels().values_list(*s.CONFIG_COLUMNS)
        return Response({"tunnels": [s.config_row(row) for row in rows]})

    def _replace(self) -> Response:
        body = self.json_body()
        if "tunnels" not in body:
            raise BadBody("Request body must have a 'tunnels' list")
        services.replace_all(self.request.user, body["tunnels"], self.actor())
        return Response({"status": "success", "message": "Configuration saved"})

    @compat_schema(
        "compat_config_replace",
        "Replace the whole configuration (all or nothing, backed up first)",
        REPLACE_RESPONSES,
        request=s.ReplaceAllInputSerializer,
    )
    def post(self, request) -> Response:
        return self._replace()

    @compat_schema(
        "compat_config_replace_put",
        "Replace the whole configuration (PUT)",
        REPLACE_RESPONSES,
        request=s.ReplaceAllInputSerializer,
    )
    def put(self, request) -> Response:
        return self._replace()


class ConfigNewView(CompatView):
    @compat_schema(
        "compat_config_new",
        "Add a tunnel",
        {201: s.CompatTunnelSerializer, 400: BAD_REQUEST, 409: _error("The same configuration exists.")},
        request=s.TunnelInputSerializer,
    )
    def post(self, request) -> Response:
        tunnel = services.create_tunnel(request.user, self.json_body(), self.actor())
        return Response(s.config_item(tunnel), status=201)


DELETED = {"status": "success", "message": "Tunnel deleted"}
UPDATE_RESPONSES = {
    200: s.CompatTunnelSerializer,
    400: BAD_REQUEST,
    404: NOT_FOUND,
    409: _error("The same configuration exists."),
}


class ConfigTunnelView(CompatView):
    @compat_schema(
        "compat_config_get",
        "One tunnel's configuration",
        {200: s.CompatTunnelSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        parameters=[PREFIX_PARAM],
    )
    def get(self, request, prefix: str) -> Response:
        return Response(s.config_item(self.resolve(prefix)))

    def _update(self, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        body = self.json_body()
        tunnel = services.update_tunnel(tunnel, update_data(tunnel, body), self.actor())
        return Response(s.config_item(tunnel))

    @compat_schema(
        "compat_config_update",
        "Update a tunnel (its hash changes)",
        UPDATE_RESPONSES,
        request=s.TunnelInputSerializer,
        parameters=[PREFIX_PARAM],
    )
    def post(self, request, prefix: str) -> Response:
        return self._update(prefix)

    @compat_schema(
        "compat_config_update_put",
        "Update a tunnel (PUT)",
        UPDATE_RESPONSES,
        request=s.TunnelInputSerializer,
        parameters=[PREFIX_PARAM],
    )
    def put(self, request, prefix: str) -> Response:
        return self._update(prefix)

    @compat_schema(
        "compat_config_delete",
        "Delete a tunnel",
        {200: s.MessageSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        parameters=[PREFIX_PARAM],
    )
    def delete(self, request, prefix: str) -> Response:
        services.delete_tunnel(self.resolve(prefix), self.actor())
        return Response(DELETED)


class ConfigDeleteView(CompatView):
    @compat_schema(
        "compat_config_delete_post",
        "Delete a tunnel (POST)",
        {200: s.MessageSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
        request=None,
        parameters=[PREFIX_PARAM],
    )
    def post(self, request, prefix: str) -> Response:
        services.delete_tunnel(self.resolve(prefix), self.actor())
        return Response(DELETED)


# --- logs ---------------------------------------------------------------


class LogsView(CompatView):
    @compat_schema("compat_logs", "Log files of the caller's tunnels", {200: s.LogFileSerializer(many=True)})
    def get(self, request) -> Response:
        entries = (file_entry(t.log_path, t.hash) for t in self.tunnels().only("uuid", "hash"))
        return Response([entry for entry in entries if entry is not None])


class LogView(CompatView):
    @compat_schema(
        "compat_log",
        "The last lines of a tunnel's log",
        {200: s.LogSerializer, 400: BAD_REQUEST, 404: _error("No such tunnel, or it has no log yet.")},
        parameters=[PREFIX_PARAM, LINES_PARAM],
    )
    def get(self, request, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        lines = positive_int(request, "lines", LOG_LINES_DEFAULT, LOG_LINES_MAX)
        try:
            log = tail_lines(tunnel.log_path, lines)
        except FileNotFoundError:
            return Response({"error": f"Log file not found for tunnel: {tunnel.hash}"}, status=404)
        return Response({"status": "success", "tunnel_hash": tunnel.hash, "log": log})
