"""URL patterns (filled in by the issue that owns this API surface)."""

from __future__ import annotations

urlpatterns: list = []
