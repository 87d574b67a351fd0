"""The OpenAPI schema and its two viewers, served from the project (drf-spectacular-sidecar assets).

``TUNNELSITE_DOCS_PUBLIC=false`` puts all three behind a login: the HTML pages
redirect to the login page, the schema answers 401. Nothing on them loads from
outside the site (``tests/test_schema.py`` checks the pages and their scripts).
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny, IsAuthenticated


class DocsAccess:
    def get_permissions(self):
        return [AllowAny()] if settings.DOCS_PUBLIC else [IsAuthenticated()]


class SchemaView(DocsAccess, SpectacularAPIView):
    pass


class LoginRedirectMixin:
    """The pages hold no data (they fetch the schema, which checks access): a browser is sent to log in."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        if not settings.DOCS_PUBLIC and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return super().get(request, *args, **kwargs)


class SwaggerView(LoginRedirectMixin, SpectacularSwaggerView):
    pass


class RedocView(LoginRedirectMixin, SpectacularRedocView):
    template_name = "tunnels/api/redoc.html"

    @staticmethod
    def _redoc_standalone() -> str:
        return reverse("redoc-bundle")


REDOC_BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
# Redoc's sidebar footer shows a logo it loads from Redocly's CDN, and no setting turns
# it off; the bundle is served with that address replaced by an empty image of our own.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
BLANK_IMAGE = b"data:image/svg+xml;base64," + base64.b64encode(BLANK_SVG)


@lru_cache(maxsize=1)
def redoc_bundle() -> bytes:
    bundle = Path(finders.find(REDOC_BUNDLE)).read_bytes()
    return bundle.replace(REDOC_CDN_LOGO, BLANK_IMAGE)


def redoc_bundle_view(request: HttpRequest) -> HttpResponse:
    """ReDoc's script without its one outside load (public: it holds no data, like the static files)."""
    response = HttpResponse(redoc_bundle(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=86400"
    return response
