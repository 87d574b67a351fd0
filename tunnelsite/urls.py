"""URL map. Each API surface owns its urls module; this file only mounts them."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from tunnels.api import docs

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("tunnels.api.urls")),
    # OpenAPI schema and viewers (assets from drf-spectacular-sidecar, no CDN).
    path("api/schema/", docs.SchemaView.as_view(), name="schema"),
    path("api/docs/", docs.SwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", docs.RedocView.as_view(url_name="schema"), name="redoc"),
    path("api/redoc/redoc.standalone.js", docs.redoc_bundle_view, name="redoc-bundle"),
    path("api/autossh/", include("tunnels.compat.urls")),
    # The dashboard: / (login for visitors), /login/, /logout/, /password/, /tunnels/...
    path("", include("tunnels.dashboard.urls")),
    # The autossh manager's own paths (/list, /status, ...) live at the root.
    path("", include("tunnels.compat.urls")),
]

# JSON {"error": "Not Found"} for API and compat paths; the admin keeps its HTML page.
handler404 = "tunnels.compat.base.not_found"
# JSON 500/503 for API and compat paths, also for errors raised in middleware (tunnelsite.faults).
handler500 = "tunnelsite.faults.server_error"
