"""Request guards that apply to every surface."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware import common
from django.utils.http import escape_leading_slashes

from tunnelsite.paths import CALLS_PREFIX

# An escaped NUL in JSON: "\u0000" preceded by an even number of backslashes
# (an odd number would mean the backslash itself was escaped).
JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
MESSAGE = "Request contains a NUL character, which is never valid input"
WRONG_DATA = 31  # sshreach "Wrong data"


def has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or b"\x00" in unquote_to_bytes(request.META.get("QUERY_STRING", "")):
        return True
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    # Oversized bodies are refused by the views with their own 400; don't read them here.
    if not 0 < length <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return False
    body = request.body
    if JSON_NUL.search(body):
        return True
    if b"\x00" not in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False  # binary garbage: the view's own "not valid UTF-8" 400 is the clearer answer
    return True


class RejectNulMiddleware:
    """400 for any NUL character in the path, query or body.

    PostgreSQL text cannot hold NUL, so such input would otherwise surface as a
    500 from whichever filter or field first reached the database.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not has_nul(request):
            return self.get_response(request)
        if request.path.startswith(CALLS_PREFIX):
            # The sshreach-style calls always answer in their own envelope.
            return JsonResponse({"message": MESSAGE, "error_code": WRONG_DATA, "success": False}, status=400)
        return JsonResponse({"error": MESSAGE}, status=400)


class CommonMiddleware(common.CommonMiddleware):
    """Django's, except that adding the missing slash keeps the method of a write (308, not 301).

    Clients follow a 301 by sending a GET: ``POST /api/v1/tunnels`` would silently
    turn into a listing and create nothing.
    """

    def get_full_path_with_slash(self, request: HttpRequest) -> str:
        # Django refuses writes here under DEBUG because its 301 would lose their body; the 308 keeps it.
        return escape_leading_slashes(request.get_full_path(force_append_slash=True))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = super().process_response(request, response)
        if response.status_code == 301 and request.method not in ("GET", "HEAD"):
            response.status_code = 308
        return response
