"""REST API v1: the host keys each owner trusts (/api/v1/known-hosts/).

List, read, pre-seed from ``ssh-keyscan`` output, accept a changed key,
delete. Every change goes through ``tunnels.hostkeys``; rows are narrowed to
the caller by the one visibility rule before any lookup.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.visibility import OwnedViewSet, OwnerFilter
from tunnels import hostkeys
from tunnels.api.filters import Param, ParamFilter, _choice
from tunnels.models import HostKeyState, KnownHost
from tunnelsite.pagination import TotalEntriesPagination
from tunnelsite.schema import BAD_REQUEST, COMMON_ERRORS, NOT_FOUND, UNSUPPORTED_MEDIA_TYPE, error


class KnownHostSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    key = serializers.CharField(read_only=True, help_text="The trusted public key (base64).")
    offered_key = serializers.CharField(
        read_only=True, help_text="State changed: the key the server offers instead (empty if it could not be fetched)."
    )

    class Meta:
        model = KnownHost
        fields = [
            "id",
            "owner",
            "host",
            "port",
            "key_type",
            "key",
            "fingerprint",
            "state",
            "offered_key",
            "offered_fingerprint",
            "source",
            "first_seen",
            "last_seen",
            "changed_at",
        ]
        read_only_fields = fields


class KeyscanSerializer(serializers.Serializer):
    line = serializers.CharField(
        max_length=hostkeys.MAX_PASTE_CHARS,
        help_text="ssh-keyscan output: one or more `host key_type key` / `[host]:port key_type key` lines.",
    )


class KnownHostsCreatedSerializer(serializers.Serializer):
    """The pinned rows, in the same shape as a page of the list."""

    total = serializers.IntegerField(help_text="How many keys were pinned.")
    entries = KnownHostSerializer(many=True)


def _host(value: str) -> str:
    host = value.lower()
    if not hostkeys.valid_host(host):
        raise ValueError("host must be a host name or an IP address")
    return host


class KnownHostFilter(ParamFilter):
    params = (
        Param("host", "host", "Only keys of this server (host name or address).", _host),
        Param(
            "state",
            "state",
            "trusted, or changed (the server offers another key).",
            _choice(tuple(HostKeyState.values), "state"),
            tuple(HostKeyState.values),
        ),
    )


ID_PARAM = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The known host's id.")
CONFLICT_ACCEPT = error("Nothing to accept, or the offered key could not be fetched (delete the entry instead).")
EXAMPLE = {
    "id": "0e0c2f8e-6b1d-4a47-9a43-1c8a5d3e2f10",
    "owner": "alice",
    "host": "ssh.example.org",
    "port": 22,
    "key_type": "ssh-ed25519",
    "key": "AAAAC3NzaC1lZDI1NTE5AAAAIC6VoQ2iGQ4pS5oW0Xx3xX0Z0m6g1vYb2gQ7p8m9n0Aa",
    "fingerprint": "SHA256:k3Yg8S7k0v2mC1pQ8r7bV6x5n4m3l2k1j0h9g8f7e6d",
    "state": "trusted",
    "offered_key": "",
    "offered_fingerprint": "",
    "source": "tofu",
    "first_seen": "2026-06-01T12:00:00Z",
    "last_seen": "2026-06-02T08:30:00Z",
    "changed_at": None,
}


@extend_schema_view(
    list=extend_schema(
        summary="List trusted host keys",
        responses={200: KnownHostSerializer(many=True), 400: BAD_REQUEST, **COMMON_ERRORS},
        examples=[OpenApiExample("one page", value=EXAMPLE, response_only=True, status_codes=["200"])],
    ),
    retrieve=extend_schema(
        summary="Get a known host",
        parameters=[ID_PARAM],
        responses={200: KnownHostSerializer, 404: NOT_FOUND, **COMMON_ERRORS},
    ),
    create=extend_schema(
        summary="Pin host keys before the first connection",
        description="Paste `ssh-keyscan -p PORT HOST` output; each line becomes a trusted key (source keyscan). "
        "A key type already known for that server is a 409: delete it first.",
        request=KeyscanSerializer,
        responses={
            201: KnownHostsCreatedSerializer,
            400: BAD_REQUEST,
            409: error("A key of that type is already known for that server."),
            415: UNSUPPORTED_MEDIA_TYPE,
            **COMMON_ERRORS,
        },
        examples=[
            OpenApiExample(
                "ssh-keyscan output",
                value={"line": f"[ssh.example.org]:2222 ssh-ed25519 {EXAMPLE['key']}"},
                request_only=True,
            )
        ],
    ),
    destroy=extend_schema(
        summary="Forget a host key",
        description="The next connection to that server trusts the key it offers (trust on first use).",
        parameters=[ID_PARAM],
        responses={204: None, 404: NOT_FOUND, **COMMON_ERRORS},
    ),
)
@extend_schema(tags=["known-hosts"])
class KnownHostViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """Host keys trusted per owner: recorded on first use or pasted, pinned, changed keys held for a decision."""

    serializer_class = KnownHostSerializer
    pagination_class = TotalEntriesPagination
    filter_backends = [KnownHostFilter, OwnerFilter]
    lookup_url_kwarg = "id"
    # Anything up to the next "/" reaches the view, so a malformed id is a JSON 404.
    lookup_value_regex = "[^/]+"
    required_scopes = {"accept": "write"}

    def base_queryset(self):
        return KnownHost.objects.select_related("owner").order_by("host", "port", "key_type", "id")

    def create(self, request) -> Response:
        body = request.data
        rows = hostkeys.create_from_keyscan(request.user, body.get("line") if hasattr(body, "get") else None)
        body = {"total": len(rows), "entries": KnownHostSerializer(rows, many=True).data}
        return Response(body, status=status.HTTP_201_CREATED)

    def destroy(self, request, id=None) -> Response:
        hostkeys.delete(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Accept the key the server now offers",
        description="For a known host in state changed: its offered key becomes the trusted one and the owner's "
        "tunnels to that server are retried at once.",
        parameters=[ID_PARAM],
        request=None,
        responses={200: KnownHostSerializer, 404: NOT_FOUND, 409: CONFLICT_ACCEPT, **COMMON_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def accept(self, request, id=None) -> Response:
        known_host = hostkeys.accept(self.get_object())
        return Response(KnownHostSerializer(known_host).data)
