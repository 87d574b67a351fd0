"""Test doubles for the fault tests: plain Django views and a middleware that raise on request.

``tests/test_faults_web.py`` mounts the views in front of the project's own URL map
(``@pytest.mark.urls("tests.fault_urls")``, which keeps the project's ``handler404`` and
``handler500``) and adds the middleware to the project's stack, so what is tested is the
project's own error handling, fed by an error it cannot otherwise be made to raise on cue.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tunnelsite.urls import handler404, handler500  # noqa: F401 - the handlers
from tunnelsite.urls import urlpatterns as project_urls

DATABASE_DOWN = 'connection to server at "127.0.0.1", port 5432 failed: Connection refused'
BUG = "bug in /work/secret/tunnelsite/module.py line 12"


def raise_database_error(request: HttpRequest) -> HttpResponse:
    raise OperationalError(DATABASE_DOWN)


def raise_bug(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(BUG)


urlpatterns = [
    path("api/v1/test-faults/database", raise_database_error),
    path("api/v1/test-faults/bug", raise_bug),
    path("api/v1/calls/test-faults-bug", raise_bug),
    path("list/test-faults/database", raise_database_error),
    path("list/test-faults/bug", raise_bug),
    path("test-faults/database", raise_database_error),
    path("test-faults/bug", raise_bug),
    *project_urls,
]


class RaiseWhenAsked:
    """Raises inside the middleware stack when the request carries ``X-Test-Fault``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        kind = request.headers.get("X-Test-Fault")
        if kind == "database":
            raise OperationalError("database is locked")
        if kind == "bug":
            raise RuntimeError(BUG)
        return self.get_response(request)
