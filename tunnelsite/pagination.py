"""One page shape for every list of the API (tunnels, history, requests): ``{"total": N, "entries": [...]}``.

``limit``/``offset`` query parameters, as rustunnel's history endpoint.
"""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response


class TotalEntriesPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000

    def get_paginated_response(self, data) -> Response:
        return Response({"total": self.count, "entries": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["total", "entries"],
            "properties": {
                "total": {"type": "integer", "description": "Rows matching the filters (all pages).", "example": 1},
                "entries": schema,
            },
        }
