"""Bench-only URLconf: the project's URLs plus constant-JSON views (the ceilings).

``/bench/ceiling`` is outside /api/ (no request-history row); ``/api/bench/ceiling``
pays the same request-history INSERT as every API request; ``/api/bench/drf-ceiling``
is a DRF view with the project's default authentication, permission and throttle
classes: what any authenticated API request costs before it does its own work.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

BODY = {"ok": True, "active_tunnels": 0, "desired_tunnels": 0, "workers": [], "version": "0.0.0"}


def ceiling(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BODY)


class DrfCeiling(APIView):
    def get(self, request) -> Response:
        return Response(BODY)


urlpatterns = [
    path("api/bench/drf-ceiling", DrfCeiling.as_view()),
    path("bench/ceiling", ceiling),
    path("api/bench/ceiling", ceiling),
    path("", include("tunnelsite.urls")),
]
