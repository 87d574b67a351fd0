"""The autossh "SSH Tunnel Manager" HTTP API on tunnelsite (docs/COMPAT.md).

Each view translates one of the original's endpoints to ``tunnels.services``
calls; shapes, status codes and messages are the original's documented ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from accounts.models import SCOPE_OPERATE
from tunnels import services
from tunnels.api.base import WAIT_PARAM, positive_int, time_left, wait_seconds
from tunnels.compat import examples as ex
from tunnels.compat import serializers as s
from tunnels.compat.base import BadBody, CompatView, plain
from tunnels.compat.logs import file_entry, tail_lines
from tunnels.models import Tunnel
from tunnels.ssh import redact_for
from tunnels.validation import REQUIRED_WITH_NAME

LOG_LINES_DEFAULT = 100
LOG_LINES_MAX = 10_000
TAG = "autossh-compat"

PREFIX_PARAM = OpenApiParameter(
    "prefix", OpenApiTypes.STR, OpenApiParameter.PATH, description="The tunnel's hash or its first 8+ characters."
)
LINES_PARAM = OpenApiParameter(
    "lines", int, description=f"How many lines from the end (default {LOG_LINES_DEFAULT}, at most {LOG_LINES_MAX})."
)


def _error(
    description: str, serializer: Any = s.CompatErrorSerializer, examples: tuple[OpenApiExample, ...] = ()
) -> OpenApiResponse:
    return OpenApiResponse(serializer, description=description, examples=list(examples))


PREFIX_ERRORS = (ex.PREFIX_TOO_SHORT, ex.AMBIGUOUS_PREFIX)
PORT_OR_SAME = _error(
    "The same configuration exists, or another tunnel holds its port (`local_port`; never says whose)."
)


def bad_prefix(also: str = "") -> OpenApiResponse:
    return _error(f"The hash prefix is too short or ambiguous{also}.", examples=PREFIX_ERRORS)


BAD_BODY = _error(
    "The body is empty, not a JSON object, or has bad or missing fields; nothing changes.",
    examples=(ex.MISSING_FIELDS,),
)
BAD_REQUEST = _error(
    "Bad body or field values (nothing changes), or a hash prefix that is too short or ambiguous.",
    examples=(ex.MISSING_FIELDS, *PREFIX_ERRORS),
)
NOT_FOUND = _error("No tunnel of the caller's has this hash prefix.", examples=(ex.NO_MATCH,))
COMMON = {
    401: _error("No valid credentials.", s.UnauthorizedSerializer, (ex.UNAUTHORIZED,)),
    403: _error("The credential lacks the scope, or a quota forbids the change."),
    405: _error("Wrong method.", examples=(ex.METHOD_NOT_ALLOWED,)),
    429: _error("Too many requests; `retry_after` says when to try again.", s.CompatThrottledSerializer),
}


def compat_schema(
    operation_id: str, summary: str, description: str, responses: dict, request: Any = None, **kwargs: Any
) -> Callable:
    # Compat views have no parsers (``json_body`` reads any Content-Type), so the body's
    # media type is named here or drf-spectacular would leave the request body out.
    body = {"application/json": request} if request is not None else None
    return extend_schema(
        tags=[TAG],
        operation_id=operation_id,
        summary=summary,
        description=description,
        request=body,
        responses={**responses, **COMMON},
        **kwargs,
    )


def _label(tunnel: Tunnel) -> str:
    return f"{tunnel.name} ({tunnel.hash})"


# --- list and status ----------------------------------------------------

LIST_COLUMNS = ("name", "local_port", "remote_host", "remote_port", "hash")


class ListView(CompatView):
    @compat_schema(
        "compat_list",
        "List tunnels (configuration view)",
        "The caller's tunnels (staff acting as admin: everyone's); `status` is `NORMAL` or `INTERACTIVE`.",
        {200: s.ListItemSerializer(many=True)},
        examples=[ex.LIST],
    )
    def get(self, request) -> Response:
        rows = self.tunnels().values_list("interactive", *LIST_COLUMNS)
        return Response([s.list_item(row[1], "INTERACTIVE" if row[0] else "NORMAL", *row[2:]) for row in rows])


class StatusView(CompatView):
    @compat_schema(
        "compat_status",
        "Observed status of every tunnel",
        "The same items as `/list`, with `status` the state the worker observes in the original's words: "
        "`RUNNING`, `STARTING`, `STOPPED`, or `DEAD` (failed, backing off before a retry, or an interactive "
        "tunnel whose login ended: `needs_auth` in the REST API).",
        {200: s.ListItemSerializer(many=True)},
        examples=[ex.STATUS],
    )
    def get(self, request) -> Response:
        rows = self.tunnels().values_list("status", *LIST_COLUMNS)
        return Response([s.list_item(row[1], s.COMPAT_STATUS[row[0]], *row[2:]) for row in rows])


# --- start / stop -------------------------------------------------------


class OperateView(CompatView):
    required_scopes = {"POST": SCOPE_OPERATE}


ALL_RESPONSES = {400: _error("`wait` is not a number of seconds from 0 to 3600; nothing changes.")}


def _outcome_lines(tunnels: list[Tunnel], want_running: bool, wait: float) -> list[str]:
    outcomes = services.wait_for_outcomes(tunnels, want_running, wait)
    return [f"{_label(t)}: {outcome.text}" for t, outcome in zip(tunnels, outcomes, strict=True)]


class StartAllView(OperateView):
    @compat_schema(
        "compat_start_all",
        "Start every non-interactive tunnel and wait for the worker",
        "Starts the caller's tunnels and waits up to `wait` seconds for the worker, like `/start/{hash}`. "
        "`output` has one line per tunnel with what happened (`started, pid …`, `failed: …`, or `queued: …` "
        "when not confirmed in time); interactive tunnels are skipped and named.",
        {200: s.OutputSerializer, **ALL_RESPONSES},
        request=None,
        parameters=[WAIT_PARAM],
        examples=[ex.START_ALL],
    )
    def post(self, request) -> Response:
        wait = wait_seconds(request)  # a bad value is a 400 before anything changes
        started, skipped = services.start_all(self.tunnels(), self.actor())
        lines = [f"Starting {len(started)} tunnel(s)", *_outcome_lines(started, True, time_left(request, wait))]
        lines += [f"skipped ({_skip_reason(t)}): {_label(t)}" for t in skipped]
        return Response({"status": "success", "output": plain("\n".join(lines))})


class StopAllView(OperateView):
    @compat_schema(
        "compat_stop_all",
        "Stop every tunnel and wait for the worker",
        "Stops the caller's tunnels and waits up to `wait` seconds for the worker, like `/stop/{hash}`. "
        "`output` has one line per tunnel (`stopped`, or `queued: …` when not confirmed in time). A stopped "
        "tunnel stays stopped until it is started again.",
        {200: s.OutputSerializer, **ALL_RESPONSES},
        request=None,
        parameters=[WAIT_PARAM],
        examples=[ex.STOP_ALL],
    )
    def post(self, request) -> Response:
        wait = wait_seconds(request)
        stopped = services.stop_all(self.tunnels(), self.actor())
        lines = [f"Stopping {len(stopped)} tunnel(s)", *_outcome_lines(stopped, False, time_left(request, wait))]
        return Response({"status": "success", "output": plain("\n".join(lines))})


class OneTunnelOperateView(OperateView):
    want_running = True

    def post(self, request, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        wait = wait_seconds(request)
        if self.want_running:
            services.request_start(tunnel, self.actor(), interactive_ok=False)
        else:
            services.request_stop(tunnel, self.actor())
        verb = "Starting" if self.want_running else "Stopping"
        outcome = services.wait_for_outcome(tunnel, self.want_running, time_left(request, wait))
        output = f"{verb} tunnel: {_label(tunnel)}\n{outcome.text}"
        return Response({"status": "success", "tunnel_hash": tunnel.hash, "output": plain(output)})


ONE_RESPONSES = {400: bad_prefix(", or `wait` is not a number of seconds from 0 to 3600"), 404: NOT_FOUND}


class StartView(OneTunnelOperateView):
    want_running = True

    @compat_schema(
        "compat_start",
        "Start one tunnel and wait for the worker",
        "Starts the tunnel with this hash (or 8+ character prefix) and waits up to `wait` seconds for the "
        "worker; `output` says what happened (started with its pid, failed with the error, or still queued).",
        {
            200: s.TunnelOutputSerializer,
            **ONE_RESPONSES,
            409: _error(
                "The tunnel is interactive: start it from the REST API or the dashboard, where its login "
                "prompt can be answered (the message says where)."
            ),
        },
        request=None,
        parameters=[PREFIX_PARAM, WAIT_PARAM],
        examples=[ex.START],
    )
    def post(self, request, prefix: str) -> Response:
        return super().post(request, prefix)


class StopView(OneTunnelOperateView):
    want_running = False

    @compat_schema(
        "compat_stop",
        "Stop one tunnel and wait for the worker",
        "Stops the tunnel with this hash (or 8+ character prefix) and waits up to `wait` seconds for the worker; "
        "`output` says whether it has stopped. It stays stopped until it is started again.",
        {200: s.TunnelOutputSerializer, **ONE_RESPONSES},
        request=None,
        parameters=[PREFIX_PARAM, WAIT_PARAM],
        examples=[ex.STOP],
    )
    def post(self, request, prefix: str) -> Response:
        return super().post(request, prefix)


# --- configuration changes ----------------------------------------------


def update_data(tunnel: Tunnel, body: dict[str, Any]) -> dict[str, Any]:
    """The original's clients don't know tunnelsite's own settings: unsent ones keep their values."""
    return {"ssh_port": tunnel.ssh_port, "auto_restart": tunnel.auto_restart, **body}


def _skip_reason(tunnel: Tunnel) -> str:
    if tunnel.interactive:
        return "interactive, needs interactive authentication"
    return "another tunnel holds its port, change its local_port"


class EditView(CompatView):
    @compat_schema(
        "compat_edit",
        "Add a tunnel, or update one when `hash` is given",
        "Without `hash`: adds a tunnel (201); a non-interactive one starts by itself. With `hash` (or an 8+ "
        "character prefix): replaces that tunnel's configuration (200) and returns its new hash; a tunnel "
        "meant to run restarts with it. The configuration is backed up first.",
        {
            201: s.EditResultSerializer,
            200: s.EditResultSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: PORT_OR_SAME,
        },
        request=s.EditInputSerializer,
        examples=ex.EDIT,
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


DELETE_DESCRIPTION = (
    "Deletes the tunnel with this hash (or 8+ character prefix), stopping it first. The configuration is "
    "backed up first; the tunnel's log is kept."
)
DELETE_RESPONSES = {200: s.EditResultSerializer, 400: bad_prefix(), 404: NOT_FOUND}


class DeleteView(CompatView):
    def _delete(self, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        services.delete_tunnel(tunnel, self.actor())
        return Response({"status": "success", "action": "deleted", "hash": tunnel.hash})

    @compat_schema(
        "compat_delete",
        "Delete a tunnel",
        DELETE_DESCRIPTION,
        DELETE_RESPONSES,
        parameters=[PREFIX_PARAM],
        examples=[ex.DELETE],
    )
    def delete(self, request, prefix: str) -> Response:
        return self._delete(prefix)

    @compat_schema(
        "compat_delete_post",
        "Delete a tunnel (POST, for clients without DELETE)",
        f"{DELETE_DESCRIPTION} The same as `DELETE /delete/{{hash}}`.",
        DELETE_RESPONSES,
        request=None,
        parameters=[PREFIX_PARAM],
        examples=[ex.DELETE],
    )
    def post(self, request, prefix: str) -> Response:
        return self._delete(prefix)


REPLACE_DESCRIPTION = (
    "Replaces the caller's whole configuration with `tunnels`: tunnels left out are deleted. All or nothing "
    "(a bad body changes nothing); the configuration is backed up first."
)
REPLACE_RESPONSES = {
    200: s.MessageSerializer,
    400: BAD_BODY,
    409: _error(
        "Two entries have the same configuration or listen on one port, or another user's tunnel holds a port."
    ),
}


class ConfigView(CompatView):
    @compat_schema(
        "compat_config",
        "Every tunnel's configuration",
        "The caller's tunnels as `{\"tunnels\": [...]}`. tunnelsite's own settings (`ssh_port`, `auto_restart`, "
        "`ssh_key`) appear only when not at their default, so a GET-edit-POST round trip keeps them.",
        {200: s.ConfigListSerializer},
        examples=[ex.CONFIG],
    )
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
        REPLACE_DESCRIPTION,
        REPLACE_RESPONSES,
        request=s.ReplaceAllInputSerializer,
        examples=ex.CONFIG_REPLACE,
    )
    def post(self, request) -> Response:
        return self._replace()

    @compat_schema(
        "compat_config_replace_put",
        "Replace the whole configuration (PUT)",
        f"{REPLACE_DESCRIPTION} The same as `POST /config`.",
        REPLACE_RESPONSES,
        request=s.ReplaceAllInputSerializer,
        examples=ex.CONFIG_REPLACE,
    )
    def put(self, request) -> Response:
        return self._replace()


class ConfigNewView(CompatView):
    @compat_schema(
        "compat_config_new",
        "Add a tunnel",
        "Adds a tunnel and answers it with its hash; a non-interactive tunnel starts by itself. "
        "`name` is required here (as in the original); the configuration is backed up first.",
        {201: s.CompatTunnelSerializer, 400: BAD_BODY, 409: PORT_OR_SAME},
        request=s.NewTunnelInputSerializer,
        examples=ex.CONFIG_NEW,
    )
    def post(self, request) -> Response:
        body = self.json_body()
        tunnel = services.create_tunnel(request.user, body, self.actor(), required=REQUIRED_WITH_NAME)
        return Response(s.config_item(tunnel), status=201)


DELETED = {"status": "success", "message": "Tunnel deleted"}
UPDATE_DESCRIPTION = (
    "Replaces the configuration of the tunnel with this hash (or 8+ character prefix) and answers it with its "
    "new hash; a tunnel meant to run restarts with it. tunnelsite settings left out keep their values. "
    "The configuration is backed up first."
)
UPDATE_RESPONSES = {
    200: s.CompatTunnelSerializer,
    400: BAD_REQUEST,
    404: NOT_FOUND,
    409: PORT_OR_SAME,
}
CONFIG_DELETE_RESPONSES = {200: s.MessageSerializer, 400: bad_prefix(), 404: NOT_FOUND}


class ConfigTunnelView(CompatView):
    @compat_schema(
        "compat_config_get",
        "One tunnel's configuration",
        "The configuration of the tunnel with this hash (or 8+ character prefix), in the `/config` item shape.",
        {200: s.CompatTunnelSerializer, 400: bad_prefix(), 404: NOT_FOUND},
        parameters=[PREFIX_PARAM],
        examples=[ex.CONFIG_ONE],
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
        UPDATE_DESCRIPTION,
        UPDATE_RESPONSES,
        request=s.TunnelInputSerializer,
        parameters=[PREFIX_PARAM],
        examples=ex.CONFIG_UPDATE,
    )
    def post(self, request, prefix: str) -> Response:
        return self._update(prefix)

    @compat_schema(
        "compat_config_update_put",
        "Update a tunnel (PUT)",
        f"{UPDATE_DESCRIPTION} The same as `POST /config/{{hash}}`.",
        UPDATE_RESPONSES,
        request=s.TunnelInputSerializer,
        parameters=[PREFIX_PARAM],
        examples=ex.CONFIG_UPDATE,
    )
    def put(self, request, prefix: str) -> Response:
        return self._update(prefix)

    @compat_schema(
        "compat_config_delete",
        "Delete a tunnel",
        DELETE_DESCRIPTION,
        CONFIG_DELETE_RESPONSES,
        parameters=[PREFIX_PARAM],
        examples=[ex.CONFIG_DELETED],
    )
    def delete(self, request, prefix: str) -> Response:
        services.delete_tunnel(self.resolve(prefix), self.actor())
        return Response(DELETED)


class ConfigDeleteView(CompatView):
    @compat_schema(
        "compat_config_delete_post",
        "Delete a tunnel (POST)",
        f"{DELETE_DESCRIPTION} The same as `DELETE /config/{{hash}}`.",
        CONFIG_DELETE_RESPONSES,
        request=None,
        parameters=[PREFIX_PARAM],
        examples=[ex.CONFIG_DELETED],
    )
    def post(self, request, prefix: str) -> Response:
        services.delete_tunnel(self.resolve(prefix), self.actor())
        return Response(DELETED)


# --- logs ---------------------------------------------------------------


class LogsView(CompatView):
    @compat_schema(
        "compat_logs",
        "Log files of the caller's tunnels",
        "Name, size and modification time of each log file; tunnels that have not run yet have none. "
        "Logs are kept when a tunnel stops.",
        {200: s.LogFileSerializer(many=True)},
        examples=[ex.LOGS],
    )
    def get(self, request) -> Response:
        entries = (file_entry(t.log_path, t.hash) for t in self.tunnels().only("uuid", "hash"))
        return Response([entry for entry in entries if entry is not None])


class LogView(CompatView):
    @compat_schema(
        "compat_log",
        "The last lines of a tunnel's log",
        "The last `lines` lines of the log of the tunnel with this hash (or 8+ character prefix).",
        {
            200: s.LogSerializer,
            400: bad_prefix(", or `lines` is not a whole number of at least 1"),
            404: _error("No such tunnel, or it has no log yet.", examples=(ex.NO_MATCH, ex.LOG_NOT_FOUND)),
        },
        parameters=[PREFIX_PARAM, LINES_PARAM],
        examples=[ex.LOG],
    )
    def get(self, request, prefix: str) -> Response:
        tunnel = self.resolve(prefix)
        lines = positive_int(request, "lines", LOG_LINES_DEFAULT, LOG_LINES_MAX)
        try:
            log = redact_for(request.user, tail_lines(tunnel.log_path, lines))
        except FileNotFoundError:
            return Response({"error": f"Log file not found for tunnel: {tunnel.hash}"}, status=404)
        return Response({"status": "success", "tunnel_hash": tunnel.hash, "log": log})
