"""REST API v1: status, tunnels (+ actions), history, backups.

Views translate HTTP to ``tunnels.services`` calls; no rule lives here.
"""

from __future__ import annotations

import io
import json
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.db.models import Count, Q
from django.http import FileResponse, HttpResponse, QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import filters, mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.visibility import OwnedViewSet, OwnerFilter
from tunnels import diskspace, logfiles, services
from tunnels.api import serializers as s
from tunnels.api.base import WAIT_PARAM, flag, positive_int, time_left, wait_seconds
from tunnels.api.filters import HistoryFilter, StrictOrderingFilter, TunnelFilter
from tunnels.api.preflight import ConnectionTestActions
from tunnels.api.prompt import PromptActions
from tunnels.models import ConfigBackup, Desired, JSONArrayLength, Status, Tunnel, TunnelSession
from tunnels.services import Actor
from tunnels.ssh import redact_for
from tunnelsite import dblocks
from tunnelsite.faults import RETRY_AFTER_DOWN
from tunnelsite.pagination import TotalEntriesPagination
from tunnelsite.schema import BAD_REQUEST, COMMON_ERRORS, CONFLICT, NOT_FOUND, UNSUPPORTED_MEDIA_TYPE, error

LOG_LINES_DEFAULT = 100
LOG_LINES_MAX = 10_000


# --- status -------------------------------------------------------------


STATUS_EXAMPLE = {
    "ok": True,
    "active_tunnels": 3,
    "desired_tunnels": 4,
    "workers": [
        {"node": "web-1", "last_seen": "2026-06-01T12:00:00Z", "tunnels": 3, "error": "", "error_since": None},
        {
            "node": "web-2",
            "last_seen": "2026-06-01T12:00:00Z",
            "tunnels": 0,
            "error": "disk full: data dir",
            "error_since": "2026-06-01T11:58:30Z",
        },
    ],
    "problems": [{"node": "web-2", "error": "disk full: data dir", "since": "2026-06-01T11:58:30Z"}],
    "version": "0.1.0",
}


def render_status(body: dict[str, Any]) -> tuple[bytes, bool]:
    """The status body as compact JSON bytes, and whether it is healthy."""
    return json.dumps(body, separators=(",", ":")).encode(), body["ok"]


def _when(moment) -> str | None:
    return None if moment is None else s.DATETIME.to_representation(moment)


STATUS_CACHE_KEY = "tunnelsite:api-status"
STATUS_CACHE_SECONDS = 1


class StatusView(APIView):
    """Health check for load balancers; no authentication, two queries."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    # A load balancer polls this; it is cheap and must not start answering 429.
    throttle_classes: list = []

    def dispatch(self, request, *args, **kwargs) -> HttpResponse:
        # The probe itself skips DRF's request wrapping and negotiation: there is
        # no credential to check and the answer is the same bytes for everyone.
        # Other methods (OPTIONS, the 405s) go through DRF as usual.
        if request.method == "GET":
            return self.get(request)
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        tags=["status"],
        summary="Health check",
        auth=[],
        responses={
            200: OpenApiResponse(s.StatusSerializer, description="A worker is alive and the database answers."),
            503: OpenApiResponse(s.StatusSerializer, description="`ok` false: no live worker, or no database."),
        },
        examples=[OpenApiExample("healthy", value=STATUS_EXAMPLE, response_only=True, status_codes=["200"])],
    )
    def get(self, request) -> HttpResponse:
        headers = {}
        try:
            body, ok = self.cached_answer()
        except DatabaseError:
            body, ok = render_status(self.database_down())
            headers["Retry-After"] = str(RETRY_AFTER_DOWN)
        code = status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE
        # Already-rendered JSON: this body is the same for every caller, so skip
        # DRF's rendering (a sizeable share of a probe that load balancers repeat).
        return HttpResponse(body, status=code, content_type="application/json", headers=headers)

    @classmethod
    def cached_answer(cls) -> tuple[bytes, bool]:
        """The rendered body and whether it is healthy, recomputed at most once a second per process.

        Load balancers poll this endpoint; a one-second-old answer is fine for
        them and keeps the per-node aggregate over every tunnel off each probe.
        """
        answer = cache.get(STATUS_CACHE_KEY)
        if answer is None:
            answer = render_status(cls._body())
            cache.set(STATUS_CACHE_KEY, answer, STATUS_CACHE_SECONDS)
        return answer

    @staticmethod
    def database_down() -> dict[str, Any]:
        return {
            "ok": False,
            "active_tunnels": 0,
            "desired_tunnels": 0,
            "workers": [],
            "problems": [],
            "version": settings.VERSION,
            "error": "database unreachable",
            "retry_after": RETRY_AFTER_DOWN,
        }

    @staticmethod
    def _body() -> dict[str, Any]:
        per_node = (
            Tunnel.objects.order_by()
            .values("node")
            .annotate(
                active=Count("id", filter=Q(status=Status.RUNNING)),
                desired=Count("id", filter=Q(desired_state=Desired.RUNNING)),
            )
        )
        counts = {row["node"]: row for row in per_node}
        nodes = services.live_workers().order_by("name").values_list("name", "last_seen", "error", "error_since")
        workers = [
            {
                "node": name,
                "last_seen": s.DATETIME.to_representation(seen),
                "tunnels": counts.get(name, {}).get("active", 0),
                "error": error,
                "error_since": _when(since),
            }
            for name, seen, error, since in nodes
        ]
        body = {
            "ok": bool(workers),
            "active_tunnels": sum(row["active"] for row in counts.values()),
            "desired_tunnels": sum(row["desired"] for row in counts.values()),
            "workers": workers,
            "problems": [
                {"node": w["node"], "error": w["error"], "since": w["error_since"]} for w in workers if w["error"]
            ],
            "version": settings.VERSION,
        }
        # Measured here too: with SQLite in a full data dir no worker can write that it is full.
        if diskspace.is_full() and not any(p["error"] == diskspace.DISK_FULL for p in body["problems"]):
            body["problems"].append({"node": "web", "error": diskspace.DISK_FULL, "since": None})
        if not workers:
            body["error"] = no_worker_reason()
        return body


def no_worker_reason() -> str:
    # A held SQLite write lock keeps every worker from writing its heartbeat: say that, not "no worker".
    if dblocks.write_locked():
        return "database is locked by another writer: workers cannot report (no heartbeat within the lease)"
    return f"no worker has reported within {settings.WORKER_LEASE_SECONDS} s"


# --- tunnels ------------------------------------------------------------


def request_body(request) -> Any:
    """The request body as the service layer expects it: a JSON object (form posts become one)."""
    data = request.data
    return data.dict() if isinstance(data, QueryDict) else data


def start_responses(data: Any) -> list[str] | None:
    """The answers a start carries up front (``{"responses": [...]}``), unchecked: the service checks them."""
    if data in (None, "", {}):
        return None
    if not isinstance(data, dict):
        raise ValidationError({"responses": ['the body must be a JSON object, e.g. {"responses": ["…"]}']})
    return data.get("responses")


TUNNEL_EXAMPLE = {
    "id": "5f0f8a8e-7d3c-4a58-9a7e-2f1d4c0b9e11",
    "name": "db",
    "owner": "alice",
    "remote_host": "alice@ssh.example.com",
    "remote_port": "5432",
    "local_port": "25432",
    "direction": "remote_to_local",
    "interactive": False,
    "prompt_pending": False,
    "ssh_port": None,
    "auto_restart": True,
    "ssh_key": "0d4f2c8e-3b1a-4e6f-9c2d-7a8b9c0d1e2f",
    "ssh_key_name": "laptop",
    "desired_state": "running",
    "status": "running",
    "pid": 12345,
    "last_error": "",
    "restart_count": 0,
    "connected_since": "2026-06-01T12:00:00Z",
    "node": "web-1",
    "hash": "8e85cbd837350eb997bed7ecf4989b58",
    "listen": "127.0.0.1:25432",
    "created_at": "2026-06-01T11:59:58Z",
    "updated_at": "2026-06-01T12:00:00Z",
}
# Swagger's "Try it out" starts from this body: a reserved name (example.com, RFC 2606) and created
# stopped, so pressing "Execute" never starts a tunnel to anyone's server.
TUNNEL_REQUEST_EXAMPLE = OpenApiExample(
    "ssh -L",
    value={
        "name": "db",
        "remote_host": "alice@ssh.example.com",
        "remote_port": "5432",
        "local_port": "25432",
        "desired_state": "stopped",
    },
    request_only=True,
)
ID_PARAM = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The tunnel's id.")
# A port clash never says whose port it is (README "Ports on this host").
TUNNEL_CONFLICT = error(
    "The same configuration exists, or another tunnel holds the -L port (`local_port`), or no port of your "
    "range is left to assign. Nothing changed."
)
WRITE_RESPONSES = {
    200: s.TunnelSerializer,
    400: BAD_REQUEST,
    404: NOT_FOUND,
    409: TUNNEL_CONFLICT,
    415: UNSUPPORTED_MEDIA_TYPE,
    **COMMON_ERRORS,
}
ACTION_RESPONSES = {200: s.TunnelActionSerializer, 400: BAD_REQUEST, 404: NOT_FOUND, **COMMON_ERRORS}


def _action_schema(summary: str, conflict: bool) -> Any:
    responses = dict(ACTION_RESPONSES)
    if conflict:
        responses[409] = CONFLICT
    return extend_schema(summary=summary, request=None, parameters=[ID_PARAM, WAIT_PARAM], responses=responses)


@extend_schema_view(
    list=extend_schema(
        summary="List tunnels",
        responses={200: s.TunnelSerializer(many=True), 400: BAD_REQUEST, **COMMON_ERRORS},
        # drf-spectacular wraps a list example in the page shape itself.
        examples=[OpenApiExample("one page", value=TUNNEL_EXAMPLE, response_only=True, status_codes=["200"])],
    ),
    retrieve=extend_schema(
        summary="Get a tunnel",
        parameters=[ID_PARAM],
        responses={200: s.TunnelSerializer, 404: NOT_FOUND, **COMMON_ERRORS},
        examples=[OpenApiExample("running", value=TUNNEL_EXAMPLE, response_only=True)],
    ),
    create=extend_schema(
        summary="Create a tunnel",
        description="An ssh -L tunnel may leave `local_port` out: the server assigns a free port of your range "
        "and the answer shows it. `403`: the port is outside your range, reserved, or on an address you may not "
        "listen on.",
        request=s.TunnelCreateSerializer,
        responses={
            201: s.TunnelSerializer,
            400: BAD_REQUEST,
            409: TUNNEL_CONFLICT,
            415: UNSUPPORTED_MEDIA_TYPE,
            **COMMON_ERRORS,
        },
        examples=[
            TUNNEL_REQUEST_EXAMPLE,
            OpenApiExample("created", value=TUNNEL_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    ),
    update=extend_schema(
        summary="Replace a tunnel's configuration",
        description="Fields left out get their defaults, except `ssh_key`, which is kept when left out. "
        "A running tunnel restarts with the new configuration.",
        parameters=[ID_PARAM],
        request=s.TunnelWriteSerializer,
        responses=WRITE_RESPONSES,
    ),
    partial_update=extend_schema(
        summary="Change some fields of a tunnel",
        parameters=[ID_PARAM],
        request=s.TunnelWriteSerializer,
        responses=WRITE_RESPONSES,
    ),
    destroy=extend_schema(
        summary="Delete a tunnel",
        description="The worker stops its process; the configuration is backed up first and history is kept.",
        parameters=[ID_PARAM],
        responses={204: None, 404: NOT_FOUND, **COMMON_ERRORS},
    ),
)
@extend_schema(tags=["tunnels"])
class TunnelViewSet(
    ConnectionTestActions,
    PromptActions,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    OwnedViewSet,
):
    """Tunnels: configuration, desired state and what the worker observes."""

    serializer_class = s.TunnelSerializer
    pagination_class = TotalEntriesPagination
    filter_backends = [TunnelFilter, OwnerFilter, filters.SearchFilter, StrictOrderingFilter]
    search_fields = ["name", "remote_host", "remote_port", "local_port", "hash"]
    ordering_fields = ["name", "created_at", "updated_at", "status", "desired_state", "local_port", "restart_count"]
    ordering = ["created_at", "id"]
    lookup_field = "uuid"
    lookup_url_kwarg = "id"
    # Anything up to the next "/" reaches the view, so a malformed id is a JSON 404, not Django's HTML page.
    lookup_value_regex = "[^/]+"
    required_scopes = {
        "start": "operate",
        "stop": "operate",
        "restart": "operate",
        "create": "write",
        "update": "write",
        "partial_update": "write",
        "destroy": "write",
        "logs": "read",
        "sessions": "read",
        **ConnectionTestActions.test_scopes,
        **PromptActions.prompt_scopes,
    }

    def base_queryset(self):
        return Tunnel.objects.select_related("owner", "ssh_key")

    def list(self, request) -> Response:
        # Plain rows, not model instances: a page of 100 tunnels plus their owners
        # as instances cost more than the query and the rendering together.
        rows = self.filter_queryset(self.get_queryset()).values(*s.ITEM_COLUMNS)
        return self.get_paginated_response(s.tunnel_items(self.paginate_queryset(rows)))

    def create(self, request) -> Response:
        data = request_body(request)
        start = None
        if isinstance(data, dict) and data.get("desired_state") not in (None, ""):
            if data["desired_state"] not in Desired.values:
                raise ValidationError({"desired_state": [f"must be one of {', '.join(Desired.values)}"]})
            start = data["desired_state"] == Desired.RUNNING
        tunnel = services.create_tunnel(request.user, data, Actor.from_request(request), start=start, assign_port=True)
        return Response(s.TunnelSerializer(tunnel).data, status=status.HTTP_201_CREATED)

    def update(self, request, id=None, partial: bool = False) -> Response:
        tunnel = services.update_tunnel(
            self.get_object(), request_body(request), Actor.from_request(request), partial=partial
        )
        return Response(s.TunnelSerializer(tunnel).data)

    def partial_update(self, request, id=None) -> Response:
        return self.update(request, id, partial=True)

    def destroy(self, request, id=None) -> Response:
        services.delete_tunnel(self.get_object(), Actor.from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- desired state ---

    @extend_schema(
        summary="Start a tunnel",
        description="An interactive tunnel's ssh asks questions (a password, a one-time code): answer them at "
        "`/api/v1/tunnels/{id}/prompt/`; a wait ends as soon as one is asked (`output`: `needs answer: …`). "
        "A script may send the answers up front instead, in order, as `responses` (they travel to the server and "
        "wait there, encrypted, until ssh asks, at most `TUNNELSITE_PROMPT_ANSWER_TTL` seconds).",
        request=s.StartSerializer,
        parameters=[ID_PARAM, WAIT_PARAM],
        responses={**ACTION_RESPONSES, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def start(self, request, id=None) -> Response:
        tunnel = self.get_object()
        wait = wait_seconds(request)  # a bad value is refused before anything changes
        responses = start_responses(request_body(request))
        services.request_start(tunnel, Actor.from_request(request), responses=responses)
        return self._outcome(tunnel, want_running=True, wait=time_left(request, wait))

    @_action_schema("Stop a tunnel", conflict=False)
    @action(detail=True, methods=["post"])
    def stop(self, request, id=None) -> Response:
        tunnel = self.get_object()
        wait = wait_seconds(request)  # a bad value is refused before anything changes
        services.request_stop(tunnel, Actor.from_request(request))
        return self._outcome(tunnel, want_running=False, wait=time_left(request, wait))

    @_action_schema("Restart a tunnel", conflict=True)
    @action(detail=True, methods=["post"])
    def restart(self, request, id=None) -> Response:
        tunnel = self.get_object()
        wait = wait_seconds(request)  # a bad value is refused before anything changes
        services.request_restart(tunnel, Actor.from_request(request))
        return self._outcome(tunnel, want_running=True, wait=time_left(request, wait))

    def _outcome(self, tunnel: Tunnel, want_running: bool, wait: float) -> Response:
        tunnel.output = services.wait_for_outcome(tunnel, want_running, wait).text
        return Response(s.TunnelActionSerializer(tunnel).data)

    # --- what happened ---

    @extend_schema(
        summary="The tunnel's log",
        parameters=[
            ID_PARAM,
            OpenApiParameter(
                "lines", int, description=f"Last lines to return (default {LOG_LINES_DEFAULT}, max {LOG_LINES_MAX})."
            ),
            OpenApiParameter(
                "download", bool, description="`1`/`true`: the current file as text/plain (its newest `LOG_MAX_BYTES`)."
            ),
        ],
        responses={
            (200, "application/json"): s.TunnelLogSerializer,
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="With `download=1`: the current log file (not its rotated copies)."
            ),
            400: BAD_REQUEST,
            404: error("No such tunnel, or no log written yet."),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["get"])
    def logs(self, request, id=None):
        tunnel = self.get_object()
        lines = positive_int(request, "lines", LOG_LINES_DEFAULT, LOG_LINES_MAX)
        path = tunnel.log_path
        if not path.is_file():
            raise NotFound(f"Log file not found for tunnel: {tunnel.uuid}")
        if flag(request, "download"):
            # The newest LOG_MAX_BYTES (the worker rotates past that), without the server's paths (non-staff).
            data = logfiles.tail_bytes(path, settings.LOG_MAX_BYTES)
            text = redact_for(request.user, data.decode("utf-8", errors="replace"))
            return FileResponse(
                io.BytesIO(text.encode()),
                as_attachment=True,
                filename=path.name,
                content_type="text/plain; charset=utf-8",
            )
        log = redact_for(request.user, logfiles.tail_lines(path, lines))
        body = {"id": tunnel.uuid, "hash": tunnel.hash, "lines": log.count("\n"), "size": path.stat().st_size}
        return Response(s.TunnelLogSerializer({**body, "log": log}).data)

    @extend_schema(
        summary="The tunnel's sessions (process lifetimes)",
        parameters=[ID_PARAM],
        responses={200: s.HistoryEntrySerializer(many=True), 404: NOT_FOUND, **COMMON_ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def sessions(self, request, id=None) -> Response:
        tunnel = self.get_object()
        queryset = (
            TunnelSession.objects.filter(tunnel_uuid=tunnel.uuid, owner_id=tunnel.owner_id)
            .select_related("owner", "token")
            .order_by("-started_at", "-id")
        )
        page = self.paginate_queryset(queryset)
        entries = s.HistoryEntrySerializer(page, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(entries)


# --- history ------------------------------------------------------------


HISTORY_EXAMPLE = {
    "id": "0b6c1c57-4a8e-4f4e-a6a4-6f1e3c7b8d90",
    "tunnel_id": "5f0f8a8e-7d3c-4a58-9a7e-2f1d4c0b9e11",
    "name": "db",
    "hash": "8e85cbd837350eb997bed7ecf4989b58",
    "direction": "remote_to_local",
    "label": "127.0.0.1:25432",
    "listen": "127.0.0.1:25432",
    "owner": "alice",
    "node": "web-1",
    "pid": 12345,
    "session_id": "0b6c1c57-4a8e-4f4e-a6a4-6f1e3c7b8d90",
    "token_id": "9a1f6a0e-2b7c-4d0f-8e55-3c2b1a0f9e88",
    "token_label": "ci-deploy",
    "registered_at": "2026-06-01T12:00:00Z",
    "unregistered_at": "2026-06-01T12:45:00Z",
    "exit_reason": "stopped_by_user",
    "exit_detail": "",
}


@extend_schema_view(
    list=extend_schema(
        summary="Tunnel history (newest first)",
        responses={200: s.HistoryEntrySerializer(many=True), 400: BAD_REQUEST, **COMMON_ERRORS},
        examples=[OpenApiExample("one session", value=HISTORY_EXAMPLE, response_only=True)],
    )
)
@extend_schema(tags=["history"])
class HistoryViewSet(mixins.ListModelMixin, OwnedViewSet):
    """One entry per process lifetime of a tunnel, kept after the tunnel is deleted."""

    serializer_class = s.HistoryEntrySerializer
    pagination_class = TotalEntriesPagination
    filter_backends = [HistoryFilter, OwnerFilter]

    def base_queryset(self):
        return TunnelSession.objects.select_related("owner", "token").order_by("-started_at", "-id")


# --- backups ------------------------------------------------------------


BACKUP_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The backup's id.")


@extend_schema_view(
    list=extend_schema(
        summary="List configuration backups", responses={200: s.BackupSerializer(many=True), **COMMON_ERRORS}
    ),
    retrieve=extend_schema(
        summary="A backup with its tunnels",
        parameters=[BACKUP_ID],
        responses={200: s.BackupDetailSerializer, 404: NOT_FOUND, **COMMON_ERRORS},
    ),
)
@extend_schema(tags=["backups"])
class BackupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """Snapshots of a user's tunnel configuration, taken before every change."""

    pagination_class = TotalEntriesPagination
    filter_backends = [OwnerFilter]
    lookup_url_kwarg = "id"
    lookup_value_regex = "[^/]+"
    required_scopes = {"restore": "write"}

    def base_queryset(self):
        queryset = (
            ConfigBackup.objects.select_related("owner", "actor")
            .annotate(tunnel_count=JSONArrayLength("tunnels"))
            .order_by("-created_at", "-id")
        )
        if self.action == "list":
            # A snapshot of a thousand tunnels is ~150 KB of JSON; a page shows only its count.
            queryset = queryset.defer("tunnels")
        return queryset

    def get_serializer_class(self):
        return s.BackupDetailSerializer if self.action == "retrieve" else s.BackupSerializer

    @extend_schema(
        summary="Restore a backup",
        description="Replaces the owner's whole configuration with the backup's (the current one is backed up "
        "first). Unchanged tunnels keep running.",
        parameters=[BACKUP_ID],
        request=None,
        responses={
            200: s.RestoreResultSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: TUNNEL_CONFLICT,
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["post"])
    def restore(self, request, id=None) -> Response:
        backup = self.get_object()
        services.restore_backup(backup, Actor.from_request(request))
        tunnels = list(Tunnel.objects.owned_by(backup.owner).select_related("owner", "ssh_key"))
        asking = services.pending_prompt_ids([t.pk for t in tunnels if t.interactive])
        body = {
            "message": f"Configuration restored from backup {backup.id}",
            "tunnels": s.TunnelSerializer(tunnels, many=True, context={"prompt_pending": asking}).data,
        }
        return Response(body)
