"""The autossh manager's paths, exactly as the original routed them (no trailing-slash variants).

Included twice by ``tunnelsite/urls.py``: under ``/api/autossh/`` and at the root,
so no ``app_name`` here (it would be a duplicate namespace). ``/start/``, ``/logs/``
and the like with an empty hash are the original's "Tunnel hash required" 400.
Unknown paths fall through to the project's 404 handler (``tunnels.compat.base.not_found``).
"""

from __future__ import annotations

from django.urls import path

from tunnels.compat import views
from tunnels.compat.base import MissingHash

urlpatterns = [
    path("list", views.ListView.as_view()),
    path("status", views.StatusView.as_view()),
    path("start", views.StartAllView.as_view()),
    path("start/", MissingHash.as_view(methods=("post",))),
    path("start/<str:prefix>", views.StartView.as_view()),
    path("stop", views.StopAllView.as_view()),
    path("stop/", MissingHash.as_view(methods=("post",))),
    path("stop/<str:prefix>", views.StopView.as_view()),
    path("edit", views.EditView.as_view()),
    path("delete/", MissingHash.as_view(methods=("post", "delete"))),
    path("delete/<str:prefix>", views.DeleteView.as_view()),
    path("config", views.ConfigView.as_view()),
    path("config/", MissingHash.as_view(methods=("get", "post", "put", "delete"))),
    # Before config/<prefix>: "new" is not a hash.
    path("config/new", views.ConfigNewView.as_view()),
    path("config//delete", MissingHash.as_view(methods=("post",))),
    path("config/<str:prefix>/delete", views.ConfigDeleteView.as_view()),
    path("config/<str:prefix>", views.ConfigTunnelView.as_view()),
    path("logs", views.LogsView.as_view()),
    path("logs/", MissingHash.as_view(methods=("get",))),
    path("logs/<str:prefix>", views.LogView.as_view()),
]
