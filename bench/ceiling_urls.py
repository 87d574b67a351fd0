"""Bench-only URLconf: the project's URLs plus two constant-JSON views (the ceiling).

``/bench/ceiling`` is outside /api/ (no request-history row); ``/api/bench/ceiling``
pays the same request-history INSERT as every API request.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

BODY = {"ok": True, "active_tunnels": 0, "desired_tunnels": 0, "workers": [], "version": "0.0.0"}


def ceiling(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BODY)


urlpatterns = [
    path("bench/ceiling", ceiling),
    path("api/bench/ceiling", ceiling),
    path("", include("tunnelsite.urls")),
]
