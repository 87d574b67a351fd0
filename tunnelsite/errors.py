"""Refusals any layer may raise and every API surface renders the same way.

They live here, below both apps, so ``accounts`` (access-key quota) and the
shared API plumbing (``tunnelsite.api``) can use them without importing
``tunnels``: the dependency graph stays ``tunnelsite`` <- ``accounts`` <- ``tunnels``.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request; ``status`` is the HTTP status an API should answer."""

    status = 400

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class InvalidInput(ServiceError):
    status = 400


class QuotaExceeded(ServiceError):
    status = 403


class PolicyDenied(ServiceError):
    """The network policy refuses a target or destination (README "Security model"); staff can grant it."""

    status = 403


class NotFound(ServiceError):
    status = 404
