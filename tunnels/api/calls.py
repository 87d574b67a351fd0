"""sshreach.me-style calls: ``GET|POST /api/v1/calls/<call>?tunnel=<hash prefix or id>``.

Every answer, errors included, is the envelope ``{"message", "error_code",
"success"}`` with sshreach's codes. HTTP statuses (README "REST API v1"):

=====  ==========================================================  ======
code   meaning                                                      HTTP
=====  ==========================================================  ======
0      ok (``client_status``: online)                               200 (202: still queued, not waited)
11     not connected (interactive tunnel, failed, not confirmed)    409
12     not disconnected (not confirmed in time)                     409
21     invalid api call (unknown call, wrong method; a browser      404 / 405
       session's GET of a call that acts)
22     too many API calls                                           429
23     client blocked (credential refused: unknown, expired,        401 / 403
       revoked, deactivated user, missing scope)
24     client inactive (``client_status``: offline; also an         200
       interactive tunnel whose login ended, ``needs_auth``)
31     wrong data (missing/bad ``tunnel`` or ``allow``)             400 / 404
50     server error (tunnelsite's own: the database did not answer, 503 (+ ``retry_after``) / 500
       or an unexpected error)
=====  ==========================================================  ======
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import SessionAuthentication
from accounts.visibility import visible_for
from tunnels import services
from tunnels.api import serializers as s
from tunnels.api.base import WAIT_PARAM, time_left, wait_seconds
from tunnels.models import Status, Tunnel
from tunnels.services import Actor, NotRunnable
from tunnelsite.faults import CALLS_SERVER_ERROR, database_fault

OK = 0
NOT_CONNECTED = 11
NOT_DISCONNECTED = 12
INVALID_CALL = 21
TOO_MANY_CALLS = 22
CLIENT_BLOCKED = 23
CLIENT_INACTIVE = 24
WRONG_DATA = 31

BOTH_METHODS = ("GET", "POST", "HEAD", "OPTIONS")


def envelope(code: int, message: str, http_status: int = 200, *, success: bool | None = None, **extra) -> Response:
    ok = code == OK if success is None else success
    return Response({**extra, "message": message, "error_code": code, "success": ok}, status=http_status)


def code_for(exc: Exception) -> int:
    if database_fault(exc) is not None:
        return CALLS_SERVER_ERROR
    if isinstance(exc, exceptions.Throttled):
        return TOO_MANY_CALLS
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed | exceptions.PermissionDenied):
        return CLIENT_BLOCKED
    if isinstance(exc, exceptions.MethodNotAllowed):
        return INVALID_CALL
    return WRONG_DATA


class EnvelopeMixin:
    """Turns the shared ``{"error": …}`` answer of any failure into the sshreach envelope."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        data = response.data if isinstance(response.data, dict) else {}
        response.data = {"message": data.get("error", "error"), "error_code": code_for(exc), "success": False}
        if "retry_after" in data and response.status_code == 503:  # the database will be back: when to retry
            response.data["retry_after"] = data["retry_after"]
        return response


SESSION_GET = (
    "invalid api call: a signed-in browser session must use POST (with its CSRF token) for this call; "
    "GET is for token, access-key and API_KEY clients"
)


class CallView(EnvelopeMixin, APIView):
    """One sshreach call on the tunnel named by ``?tunnel=``."""

    scope = "operate"
    # Calls act on GET (as sshreach's do); HEAD would run the same action, so it is a 405.
    http_method_names = ["get", "post", "options"]

    @property
    def required_scopes(self) -> dict[str, str]:
        return dict.fromkeys(BOTH_METHODS, self.scope)

    @property
    def acts(self) -> bool:
        return self.scope != "read"

    def get(self, request) -> Response:
        # A session cookie rides along on a cross-site top-level GET (SameSite=Lax) and CSRF
        # protects only unsafe methods, so a session may act through POST alone. Token clients
        # keep sshreach's GET: a foreign page cannot make a browser send their Authorization header.
        if self.acts and isinstance(request.successful_authenticator, SessionAuthentication):
            return envelope(INVALID_CALL, SESSION_GET, 405)
        return self.call(request, self.tunnel(request))

    def post(self, request) -> Response:
        return self.call(request, self.tunnel(request))

    def call(self, request, tunnel: Tunnel) -> Response:
        raise NotImplementedError

    @staticmethod
    def param(request, name: str) -> str:
        value = request.query_params.get(name)
        if value is None and hasattr(request.data, "get"):
            value = request.data.get(name)
        return str(value).strip() if value is not None else ""

    def wait(self, request) -> float:
        """``wait`` from the query or the body, like ``tunnel``; checked before anything changes."""
        return wait_seconds(request, self.param(request, "wait"))

    def tunnel(self, request) -> Tunnel:
        """By id (a UUID with dashes) or by compat hash prefix, among the caller's tunnels."""
        ref = self.param(request, "tunnel")
        if not ref:
            raise exceptions.ValidationError("missing parameter: tunnel (a tunnel id or hash prefix)")
        queryset = visible_for(request, Tunnel.objects.all())
        if "-" in ref:
            try:
                tunnel = queryset.filter(uuid=uuid.UUID(ref)).first()
            except ValueError:
                tunnel = None
            if tunnel is None:
                raise exceptions.NotFound(f"No tunnel found with id: {ref}")
            return tunnel
        return services.resolve_prefix(queryset, ref)


def _desired_outcome(tunnel: Tunnel, want_running: bool, wait: float, failure_code: int) -> Response:
    outcome = services.wait_for_outcome(tunnel, want_running, wait)
    if outcome.done:
        return envelope(OK, "OK")
    if outcome.queued and not outcome.waited:  # wait=0, or every waiting slot of this process taken
        return envelope(OK, outcome.text, 202)
    verb = "not connected" if want_running else "not disconnected"
    return envelope(failure_code, f"{verb}: {outcome.text}", 409)


TUNNEL_PARAM = OpenApiParameter(
    "tunnel", str, required=True, description="The tunnel: its id (UUID) or a compat hash prefix (8+ characters)."
)
ALLOW_PARAM = OpenApiParameter(
    "allow", OpenApiTypes.BOOL, required=True, description="true: keep restarting the tunnel when it drops."
)


def _envelope_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.CallEnvelopeSerializer, description=description)


ENVELOPE_ERRORS = {
    400: _envelope_response("31 wrong data: missing or bad parameter, hash prefix too short or ambiguous."),
    401: _envelope_response("23 client blocked: no valid credentials (also a deactivated user)."),
    403: _envelope_response("23 client blocked: the credential lacks the scope."),
    404: _envelope_response("31 wrong data: no such tunnel among the caller's."),
    429: _envelope_response("22 too many API calls."),
}


SESSION_GET_ERROR = {
    405: _envelope_response(
        "21 invalid api call: GET from a signed-in browser session (sessions use POST with their CSRF token)."
    )
}


def _call_schema(name: str, summary: str, responses: dict, params: list, examples: list) -> Any:
    def decorate(view_class):
        for method in ("get", "post"):
            extra = SESSION_GET_ERROR if method == "get" and view_class.scope != "read" else {}
            schema = extend_schema(
                tags=["calls"],
                summary=summary,
                operation_id=f"call_{name}_{method}",
                request=None,
                parameters=[TUNNEL_PARAM, *params],
                responses={**responses, **ENVELOPE_ERRORS, **extra},
                examples=examples,
            )
            setattr(view_class, method, schema(_copy(getattr(view_class, method))))
        return view_class

    return decorate


def _copy(function):
    # Each subclass needs its own function object to carry its own schema.
    def method(self, request):
        return function(self, request)

    method.__name__ = function.__name__
    return method


def _example(name: str, message: str, code: int, success: bool, status: str = "200", **extra) -> OpenApiExample:
    value = {**extra, "message": message, "error_code": code, "success": success}
    return OpenApiExample(name, value=value, response_only=True, status_codes=[status])


@_call_schema(
    "connect",
    "Open (start) the tunnel",
    {
        200: _envelope_response("0: the worker reports the tunnel running."),
        202: _envelope_response("0: accepted, not confirmed yet (wait=0, or no free waiting slot)."),
        409: _envelope_response("11 not connected: interactive tunnel, failed start or no confirmation in time."),
    },
    [WAIT_PARAM],
    [_example("connected", "OK", 0, True), _example("not connected", "not connected: failed: …", 11, False, "409")],
)
class ConnectCall(CallView):
    def call(self, request, tunnel: Tunnel) -> Response:
        wait = self.wait(request)
        try:
            services.request_start(tunnel, Actor.from_request(request), interactive_ok=False)
        except NotRunnable as exc:
            return envelope(NOT_CONNECTED, f"not connected: {exc.message}", 409)
        return _desired_outcome(tunnel, True, time_left(request, wait), NOT_CONNECTED)


@_call_schema(
    "disconnect",
    "Close (stop) the tunnel",
    {
        200: _envelope_response("0: the worker reports the tunnel stopped."),
        202: _envelope_response("0: accepted, not confirmed yet (wait=0, or no free waiting slot)."),
        409: _envelope_response("12 not disconnected: no confirmation in time."),
    },
    [WAIT_PARAM],
    [_example("disconnected", "OK", 0, True)],
)
class DisconnectCall(CallView):
    def call(self, request, tunnel: Tunnel) -> Response:
        wait = self.wait(request)
        services.request_stop(tunnel, Actor.from_request(request))
        return _desired_outcome(tunnel, False, time_left(request, wait), NOT_DISCONNECTED)


@_call_schema(
    "client_status",
    "Is the tunnel up?",
    {200: _envelope_response('`"online"` (code 0) or `"offline"` (code 24, success true).')},
    [],
    [_example("online", "online", 0, True), _example("offline", "offline", 24, True)],
)
class ClientStatusCall(CallView):
    scope = "read"

    def call(self, request, tunnel: Tunnel) -> Response:
        if tunnel.status == Status.RUNNING:
            return envelope(OK, "online")
        return envelope(CLIENT_INACTIVE, "offline", success=True)


@_call_schema(
    "set_allow_clientless",
    "Keep restarting the tunnel when it drops (auto-restart)",
    {200: OpenApiResponse(s.AllowClientlessSerializer, description="The new setting.")},
    [ALLOW_PARAM],
    [_example("allowed", "success", 0, True, allow_clientless=True)],
)
class SetAllowClientlessCall(CallView):
    def call(self, request, tunnel: Tunnel) -> Response:
        allow = self.param(request, "allow").lower()
        if allow not in ("true", "false", "1", "0"):
            raise exceptions.ValidationError("allow must be true or false")
        services.set_auto_restart(tunnel, allow in ("true", "1"))
        return envelope(OK, "success", allow_clientless=tunnel.auto_restart)


@extend_schema(exclude=True)
class UnknownCall(EnvelopeMixin, APIView):
    """Any other call name: 21 invalid api call (after authentication, like every call)."""

    required_scopes = dict.fromkeys(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"), "read")

    def _unknown(self, request, call: str = "") -> Response:
        return envelope(INVALID_CALL, f"invalid api call: {call}", 404)

    get = post = put = patch = delete = _unknown


CALLS = {
    "connect": ConnectCall,
    "disconnect": DisconnectCall,
    "client_status": ClientStatusCall,
    "set_allow_clientless": SetAllowClientlessCall,
}
