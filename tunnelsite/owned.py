"""The one visibility rule for every row that belongs to a user.

A model that belongs to a user declares which field names the owner
(``owner_field = "owner"``, or ``"user"`` for credentials) and uses
``OwnedQuerySet``. ``visible(queryset, user, as_admin=...)`` is then the only
place that decides who may see a row: nobody anonymous; staff acting as
admin (a credential with the ``admin`` scope, decided in ``accounts``)
everyone's; everyone else their own. A later organisations feature changes
this function and nothing else.
"""

from __future__ import annotations

from typing import Any

from django.db import models

DEFAULT_OWNER_FIELD = "owner"


def owner_field(model: type[models.Model]) -> str:
    """The name of the field that says whose a row is."""
    return getattr(model, "owner_field", DEFAULT_OWNER_FIELD)


def visible(queryset: models.QuerySet, user: Any, *, as_admin: bool = False) -> models.QuerySet:
    """The rows of ``queryset`` that ``user`` may see (and therefore act on)."""
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    if as_admin and user.is_staff:
        return queryset
    return queryset.filter(**{owner_field(queryset.model): user})


class OwnedQuerySet(models.QuerySet):
    """Queryset of an owned model: ``Model.objects.visible_to(user, as_admin=...)``."""

    def visible_to(self, user: Any, *, as_admin: bool = False) -> OwnedQuerySet:
        return visible(self, user, as_admin=as_admin)

    def owned_by(self, user: Any) -> OwnedQuerySet:
        return self.filter(**{owner_field(self.model): user})
