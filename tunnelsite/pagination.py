"""One page shape for every list of the API (tunnels, history, requests): ``{"total": N, "entries": [...]}``.

``limit``/``offset`` query parameters, as rustunnel's history endpoint.
"""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from tunnelsite.params import query_whole_number


class TotalEntriesPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000

    # DRF falls back to the defaults on a bad value; a client asking for
    # ``limit=abc`` should hear about it (README: a bad parameter is a 400 naming it).
    def get_limit(self, request) -> int:
        return min(query_whole_number(request, self.limit_query_param, self.default_limit, 1), self.max_limit)

    def get_offset(self, request) -> int:
        return query_whole_number(request, self.offset_query_param, 0, 0)

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
