"""What every REST API v1 view shares: who sees what, ``?wait=`` and other parameters."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError

from accounts.permissions import acts_as_admin
from tunnels.models import Tunnel
from tunnelsite.params import query_whole_number

WAIT_DEFAULT = 5.0
WAIT_MAX = 30.0


def visible_tunnels(request) -> QuerySet[Tunnel]:
    """The tunnels a request may reach: its user's own; staff acting as admin see everyone's.

    A staff user whose credential lacks the ``admin`` scope is treated like
    anyone else (accounts.permissions: admin is what lets staff reach others' rows).
    """
    queryset = Tunnel.objects.visible_to(request.user)
    if request.user.is_staff and not acts_as_admin(request):
        queryset = queryset.owned_by(request.user)
    return queryset


def visible_owned(queryset: QuerySet, request) -> QuerySet:
    """The same rule for rows that belong to a user through ``owner`` (sessions, backups)."""
    if acts_as_admin(request):
        return queryset
    if not request.user.is_authenticated:
        return queryset.none()
    return queryset.filter(owner=request.user)


class OwnedViewSet(viewsets.GenericViewSet):
    """Base of every v1 viewset: ``get_queryset`` scopes rows to the caller before any lookup,
    so another user's object is a 404, never a 403."""

    def scoped_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return self.scoped_queryset()


def wait_seconds(request, raw: str | None = None) -> float:
    """``?wait=`` (or ``raw``, where a body may carry it) as the compat API: seconds to wait for the
    worker; default 5, 0 = don't wait, capped."""
    if raw is None:
        raw = request.query_params.get("wait")
    if raw in (None, ""):
        return WAIT_DEFAULT
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({"wait": ["must be a number of seconds, e.g. 5 or 0"]}) from None
    if not 0 <= value <= 3600:  # also refuses nan and inf
        raise ValidationError({"wait": ["must be from 0 to 3600 seconds"]})
    return min(value, WAIT_MAX)


def positive_int(request, name: str, default: int, maximum: int) -> int:
    return min(query_whole_number(request, name, default, 1), maximum)


def flag(request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


WAIT_PARAM = OpenApiParameter(
    "wait",
    float,
    description=f"Seconds to wait for the worker to act (default {WAIT_DEFAULT:g}, 0 = don't wait, "
    f"at most {WAIT_MAX:g}).",
)
