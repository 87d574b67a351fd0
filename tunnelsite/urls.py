"""URL map. Each app owns its own urls modules; this file only mounts them."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
