"""What every service shares: its errors, who is acting, the change marker, the per-owner lock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.utils import timezone

from tunnels.models import (
    ChangeMarker,
)
from tunnels.validation import TunnelDataError
from tunnels.worker.wake import notify_change
from tunnelsite.errors import InvalidInput, ServiceError

MARKER = "tunnels"


# --- errors (the shared ones live in tunnelsite.errors) -----------------


class DuplicateTunnel(ServiceError):
    status = 409


class NotRunnable(ServiceError):
    status = 409


def _invalid(exc: TunnelDataError, prefix: str = "") -> InvalidInput:
    return InvalidInput(f"{prefix}{exc.summary}", exc.fields)


# --- who is acting ------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """The user (and token, if any) on whose behalf a change is made."""

    user: Any
    token: Any = None

    @classmethod
    def from_request(cls, request) -> Actor:
        from accounts.models import ApiToken

        token = request.auth if isinstance(getattr(request, "auth", None), ApiToken) else None
        return cls(user=request.user, token=token)

    @property
    def label(self) -> str:
        if self.token is not None:
            return f"{self.user.username} (token {self.token.label or self.token.prefix})"
        return getattr(self.user, "username", "system")


SYSTEM = Actor(user=None)


# --- change marker ------------------------------------------------------


def bump_marker() -> None:
    """Tell the workers the desired state changed: the marker row, and a wake-up once the change commits
    (NOTIFY on PostgreSQL, a datagram to the workers' sockets on SQLite; tunnels.worker.wake)."""
    updated = ChangeMarker.objects.filter(name=MARKER).update(value=F("value") + 1, changed_at=timezone.now())
    if not updated:
        ChangeMarker.objects.get_or_create(name=MARKER, defaults={"value": 1})
    notify_change()


def marker_value() -> int:
    return ChangeMarker.objects.filter(name=MARKER).values_list("value", flat=True).first() or 0
