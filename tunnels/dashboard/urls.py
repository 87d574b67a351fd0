"""The dashboard's URLs, mounted at the site root (``tunnelsite/urls.py``).

None of these may collide with the compat API's root paths (``/list``, ``/status``,
``/start``, ``/stop``, ``/edit``, ``/delete``, ``/config``, ``/logs``).
"""

from __future__ import annotations

from django.urls import path

from tunnels.dashboard import auth, tunnel, tunnels

app_name = "dashboard"

urlpatterns = [
    path("", tunnels.index, name="tunnels"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("password/", auth.PasswordChangeView.as_view(), name="password"),
    path("tunnels/table/", tunnels.table_fragment, name="tunnels-table"),
    path("tunnels/bulk/", tunnels.bulk, name="tunnels-bulk"),
    path("tunnels/add/", tunnel.add, name="tunnel-add"),
    path("tunnels/<str:tunnel_id>/", tunnel.detail, name="tunnel"),
    path("tunnels/<str:tunnel_id>/edit/", tunnel.edit, name="tunnel-edit"),
    path("tunnels/<str:tunnel_id>/delete/", tunnel.delete, name="tunnel-delete"),
    path("tunnels/<str:tunnel_id>/action/", tunnel.action, name="tunnel-action"),
    path("tunnels/<str:tunnel_id>/log/", tunnel.log_fragment, name="tunnel-log"),
    path("tunnels/<str:tunnel_id>/state/", tunnel.status_fragment, name="tunnel-state"),
    path("tunnels/<str:tunnel_id>/test/", tunnel.test_connection, name="tunnel-test"),
    path("tunnels/<str:tunnel_id>/test/result/", tunnel.test_fragment, name="tunnel-test-result"),
]
