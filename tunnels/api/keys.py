"""REST API v1: ``/api/v1/ssh-keys/`` (users' SSH keys). Thin: ``tunnels.services_keys`` decides."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Count, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from accounts.visibility import OwnedViewSet, OwnerFilter
from tunnels import services_keys
from tunnels.api.keys_schema import SshKeySerializer, authorized_keys_schema, ssh_key_schema
from tunnels.api.views import request_body
from tunnels.models import SshKey
from tunnelsite.pagination import TotalEntriesPagination


class PlainTextRenderer(BaseRenderer):
    """``?format=text``: a string body as it is (the authorized_keys line)."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data.encode() if isinstance(data, str) else json.dumps(data).encode()


@ssh_key_schema
@extend_schema(tags=["ssh-keys"])
class SshKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    """Users' SSH keys: the public halves, and the line that installs one on an SSH server."""

    serializer_class = SshKeySerializer
    pagination_class = TotalEntriesPagination
    filter_backends = [OwnerFilter]
    lookup_url_kwarg = "id"
    # Anything up to the next "/" reaches the view, so a malformed id is a JSON 404.
    lookup_value_regex = "[^/]+"
    required_scopes = {
        "list": "read",
        "retrieve": "read",
        "authorized_keys": "read",
        "create": "write",
        "destroy": "write",
    }

    def base_queryset(self) -> QuerySet[SshKey]:
        return (
            SshKey.objects.select_related("owner").annotate(tunnel_count=Count("tunnels")).order_by("created_at", "id")
        )

    def create(self, request) -> Response:
        key = services_keys.create_key(request.user, request_body(request))
        return Response(SshKeySerializer(key).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, id=None) -> Response:
        services_keys.delete_key(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @authorized_keys_schema
    @action(
        detail=True,
        methods=["get"],
        url_path="authorized-keys",
        renderer_classes=[JSONRenderer, PlainTextRenderer],
    )
    def authorized_keys(self, request, id=None) -> Response:
        key = self.get_object()
        line = services_keys.authorized_keys_line(key, request.query_params.get("from"))
        if request.accepted_renderer.format == PlainTextRenderer.format:
            return Response(f"{line}\n", content_type="text/plain; charset=utf-8")
        return Response({"line": line, "tunnels": [t.name for t in services_keys.tunnels_using(key)]})

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and response.status_code >= 400:
            # Errors are JSON like everywhere in v1, whatever ?format= asked for.
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response
