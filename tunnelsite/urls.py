"""URL map. Each API surface owns its urls module; this file only mounts them."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("tunnels.api.urls")),
    path("api/autossh/", include("tunnels.compat.urls")),
    # The autossh manager's own paths (/list, /status, ...) live at the root.
    path("", include("tunnels.compat.urls")),
]
