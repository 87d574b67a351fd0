"""OpenAPI: the compat API is documented once, under ``/api/autossh/``.

``tunnels.compat.urls`` is mounted twice (``/api/autossh/`` and the root); listing
both would repeat every operation id. Referenced from ``SPECTACULAR_SETTINGS
["PREPROCESSING_HOOKS"]``.
"""

from __future__ import annotations

from tunnels.compat.base import COMPAT_MOUNT, CompatView, MissingHash


def document_compat_once(endpoints: list, **kwargs) -> list:
    """Drop the root mount's copies and the "Tunnel hash required" stubs."""
    kept = []
    for endpoint in endpoints:
        path, _regex, _method, callback = endpoint
        view = getattr(callback, "cls", None)
        if isinstance(view, type) and issubclass(view, CompatView):
            if issubclass(view, MissingHash) or not path.startswith(COMPAT_MOUNT):
                continue
        kept.append(endpoint)
    return kept
