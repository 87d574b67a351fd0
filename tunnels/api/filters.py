"""Query-parameter filters of the REST API v1 list endpoints.

Small filter backends rather than a dependency: each knows its parameters,
refuses a bad value with a 400 naming the parameter, and describes itself to
drf-spectacular through ``get_schema_operation_parameters``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter

from tunnels.models import DIRECTIONS, Desired, Status
from tunnelsite.params import parse_since


@dataclass(frozen=True)
class Param:
    name: str
    lookup: str
    description: str
    parse: Callable[[str], Any] = str
    enum: tuple[str, ...] | None = None
    fmt: str | None = None

    def schema(self) -> dict:
        schema: dict[str, Any] = {"type": "string"}
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.fmt:
            schema["format"] = self.fmt
        return {"name": self.name, "in": "query", "required": False, "description": self.description, "schema": schema}


def _choice(choices: tuple[str, ...], name: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}")
        return value

    return parse


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError("expected a tunnel id (UUID)") from None


class ParamFilter(BaseFilterBackend):
    """Applies ``params`` (exact lookups) from the query string; subclasses list them."""

    params: tuple[Param, ...] = ()

    def filter_queryset(self, request, queryset: QuerySet, view) -> QuerySet:
        errors: dict[str, list[str]] = {}
        lookups: dict[str, Any] = {}
        for param in self.params:
            raw = request.query_params.get(param.name)
            if raw in (None, ""):
                continue
            try:
                lookups[param.lookup] = param.parse(raw)
            except ValueError as exc:
                errors[param.name] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        return queryset.filter(**lookups) if lookups else queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [param.schema() for param in self.params]


class TunnelFilter(ParamFilter):
    params = (
        Param("name", "name", "Exact tunnel name."),
        Param("status", "status", "Observed status.", _choice(Status.values, "status"), tuple(Status.values)),
        Param(
            "desired_state",
            "desired_state",
            "Desired state.",
            _choice(Desired.values, "desired_state"),
            tuple(Desired.values),
        ),
        Param("direction", "direction", "Forward direction.", _choice(DIRECTIONS, "direction"), DIRECTIONS),
        Param("hash", "hash__startswith", "Compat hash or a prefix of it.", str.lower),
    )


class HistoryFilter(ParamFilter):
    params = (
        Param("direction", "direction", "Forward direction.", _choice(DIRECTIONS, "direction"), DIRECTIONS),
        Param(
            "tunnel", "tunnel_uuid", "Only this tunnel's sessions (tunnel id, also after deletion).", _uuid, fmt="uuid"
        ),
        Param("since", "started_at__gte", "Sessions started at or after this time.", parse_since, fmt="date-time"),
    )


class StrictOrderingFilter(OrderingFilter):
    """DRF's ordering, except that an unknown field is a 400 naming ``ordering`` instead of being ignored."""

    def remove_invalid_fields(self, queryset: QuerySet, fields: list[str], view, request) -> list[str]:
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        unknown = [term for term in fields if term not in valid]
        if unknown:
            allowed = ", ".join(view.ordering_fields)
            raise ValidationError(
                {self.ordering_param: [f"cannot order by {', '.join(unknown) or 'nothing'}; one of: {allowed}"]}
            )
        return valid
