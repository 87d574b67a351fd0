"""The OpenAPI schema and its two viewers, served from the project (drf-spectacular-sidecar assets).

``TUNNELSITE_DOCS_PUBLIC=false`` puts all three behind a login: the HTML pages
redirect to the login page, the schema answers 401.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
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
