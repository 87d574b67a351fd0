"""The one visibility rule (``tunnelsite.owned``) applied to a request.

Whether a request acts as admin depends on its credential's scopes, which
only this app knows; everything else about who sees which row is decided in
``tunnelsite.owned.visible``. Every REST viewset, the compat views and the
calls narrow their rows through ``visible_for`` (viewsets: ``OwnedViewMixin``).
"""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.permissions import acts_as_admin
from tunnelsite.owned import visible


def visible_for(request, queryset: QuerySet) -> QuerySet:
    """The rows of ``queryset`` the request's user may see: their own; staff acting as admin, everyone's."""
    return visible(queryset, request.user, as_admin=acts_as_admin(request))


class OwnedViewMixin:
    """For viewsets: ``get_queryset`` is ``base_queryset()`` narrowed by the one rule, before any lookup,
    so another user's object is a 404, never a 403."""

    def base_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return visible_for(self.request, self.base_queryset())
