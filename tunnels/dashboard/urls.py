"""The dashboard's URLs, mounted at the site root (``tunnelsite/urls.py``).

None of these may collide with the compat API's root paths (``/list``, ``/status``,
``/start``, ``/stop``, ``/edit``, ``/delete``, ``/config``, ``/logs``).
"""

from __future__ import annotations

from django.urls import path

from tunnels.dashboard import access_keys, account, auth, backups, keys, known_hosts, requests, tokens, tunnel, tunnels

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
    path("tunnels/<str:tunnel_id>/prompt/", tunnel.prompt_fragment, name="tunnel-prompt"),
    path("tunnels/<str:tunnel_id>/prompt/answer/", tunnel.answer_prompt, name="tunnel-prompt-answer"),
    path("tunnels/<str:tunnel_id>/test/", tunnel.test_connection, name="tunnel-test"),
    path("tunnels/<str:tunnel_id>/test/result/", tunnel.test_fragment, name="tunnel-test-result"),
    # Account pages: tokens, SSH keys, known hosts, request history.
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<str:pk>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("access-keys/", access_keys.access_key_list, name="access-keys"),
    path("access-keys/<str:pk>/disable/", access_keys.access_key_disable, name="access-key-disable"),
    path("access-keys/<str:pk>/enable/", access_keys.access_key_enable, name="access-key-enable"),
    path("access-keys/<str:pk>/delete/", access_keys.access_key_delete, name="access-key-delete"),
    path("keys/", keys.key_list, name="keys"),
    path("keys/generate/", keys.key_generate, name="key-generate"),
    path("keys/upload/", keys.key_upload, name="key-upload"),
    path("keys/<str:pk>/delete/", keys.key_delete, name="key-delete"),
    path("known-hosts/", known_hosts.known_host_list, name="known-hosts"),
    path("known-hosts/pin/", known_hosts.known_host_pin, name="known-host-pin"),
    path("known-hosts/<str:pk>/accept/", known_hosts.known_host_accept, name="known-host-accept"),
    path("known-hosts/<str:pk>/delete/", known_hosts.known_host_delete, name="known-host-delete"),
    path("requests/", requests.request_list, name="requests"),
    path("history/", account.history, name="history"),
    path("account/", account.account, name="account"),
    path("backups/", backups.backup_list, name="backups"),
    path("backups/<str:pk>/", backups.backup_detail, name="backup"),
    path("backups/<str:pk>/restore/", backups.backup_restore, name="backup-restore"),
]
