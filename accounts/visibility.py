"""The one visibility rule (``tunnelsite.owned``) applied to a request.

Whether a request acts as admin depends on its credential's scopes, which
only this app knows; everything else about who sees which row is decided in
``tunnelsite.owned.visible``. Every REST viewset, the compat views and the
calls narrow their rows through ``visible_for`` (viewsets: ``OwnedViewMixin``
or ``OwnedViewSet``, which also answer the staff ``?owner=``/``?user=`` filter
through ``OwnerFilter``).
"""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.filters import BaseFilterBackend

from accounts.permissions import acts_as_admin
from tunnelsite.owned import owner_field, visible


def visible_for(request, queryset: QuerySet) -> QuerySet:
    """The rows of ``queryset`` the request's user may see: their own; staff acting as admin, everyone's."""
    return visible(queryset, request.user, as_admin=acts_as_admin(request))


class OwnedViewMixin:
    """For viewsets: ``get_queryset`` is ``base_queryset()`` narrowed by the one rule, before any lookup,
    so another user's object is a 404, never a 403.

    ``owner_param`` names the query parameter with which staff acting as admin
    narrow to one username's rows (``OwnerFilter``); ignored for anyone else.
    """

    owner_param = "owner"

    def base_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return visible_for(self.request, self.base_queryset())


class OwnedViewSet(OwnedViewMixin, viewsets.GenericViewSet):
    """Base of every owned-rows viewset: add the mixins for the actions and define ``base_queryset()``."""


OWNER_PARAM_SCHEMA = {
    "description": "Staff with the admin scope: only this username's rows.",
    "schema": {"type": "string"},
}


class OwnerFilter(BaseFilterBackend):
    """``?<view.owner_param>=<username>``: staff acting as admin see only that user's rows.

    Everyone else already sees only their own rows (``visible_for``), so for
    them the parameter is ignored rather than refused: it changes nothing.
    """

    def filter_queryset(self, request, queryset: QuerySet, view) -> QuerySet:
        username = request.query_params.get(self.param(view))
        if not username or not acts_as_admin(request):
            return queryset
        return queryset.filter(**{f"{owner_field(queryset.model)}__username": username})

    @staticmethod
    def param(view) -> str:
        return getattr(view, "owner_param", OwnedViewMixin.owner_param)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [{"name": self.param(view), "in": "query", "required": False, **OWNER_PARAM_SCHEMA}]
