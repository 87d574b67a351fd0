"""Shared plumbing of the dashboard views: the user's own rows, the 404 page, service errors as messages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from tunnelsite.owned import visible


def mine(request: HttpRequest, queryset: QuerySet) -> QuerySet:
    """The one visibility rule, never as admin: the dashboard shows a user their own rows (staff use the admin)."""
    return visible(queryset, request.user, as_admin=False)


def owned_or_404(request: HttpRequest, queryset: QuerySet, **lookup: Any) -> Model:
    """The user's row matching ``lookup``; anyone else's is indistinguishable from a missing one."""
    try:
        return mine(request, queryset).get(**lookup)
    except (queryset.model.DoesNotExist, ValidationError, ValueError) as exc:  # a malformed UUID
        raise Http404 from exc


def not_found_page(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/404.html", status=404)


def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A dashboard view: login required, and a 404 is the dashboard's HTML page whatever the Accept header
    (the project's handler answers JSON to API clients)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return not_found_page(request)

    protected = login_required(wrapped)

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.headers.get("HX-Request") and not request.user.is_authenticated:
            # A poll after the session ended: send the whole page to the login form instead of
            # swapping the login page into a table.
            response = HttpResponse(status=200)
            response["HX-Redirect"] = settings.LOGIN_URL
            return response
        return protected(request, *args, **kwargs)

    return checked
