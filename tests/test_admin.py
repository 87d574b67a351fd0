from __future__ import annotations

import pytest

from tests.factories import make_tunnel, tunnel_data
from tunnels.models import ConfigBackup, Tunnel

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return client, user


def test_admin_changelists_render(admin_client_, owner):
    client, _ = admin_client_
    make_tunnel(owner)
    for url in [
        "/admin/",
        "/admin/tunnels/tunnel/",
        "/admin/tunnels/tunnelsession/",
        "/admin/tunnels/configbackup/",
        "/admin/tunnels/workernode/",
        "/admin/accounts/user/",
        "/admin/accounts/apitoken/",
        "/admin/accounts/accesskey/",
        "/admin/accounts/apirequest/",
    ]:
        assert client.get(url).status_code == 200, url


def test_admin_backup_page_shows_the_snapshot(admin_client_, owner):
    client, _ = admin_client_
    make_tunnel(owner, name="first")
    make_tunnel(owner, name="second")  # its backup holds "first"
    backup = ConfigBackup.objects.order_by("-created_at").first()
    response = client.get(f"/admin/tunnels/configbackup/{backup.pk}/change/")
    assert response.status_code == 200 and "first" in response.content.decode()


def test_admin_add_goes_through_service_layer(admin_client_, owner):
    client, _ = admin_client_
    data = tunnel_data()
    form = {
        **data,
        "owner": owner.pk,
        "direction": "remote_to_local",
        "desired_state": "stopped",
        "auto_restart": "on",
        "name": "from-admin",
    }
    response = client.post("/admin/tunnels/tunnel/add/", form)
    assert response.status_code == 302, response.content[:2000]
    tunnel = Tunnel.objects.get(name="from-admin")
    assert tunnel.hash == tunnel.compute_hash()
    assert ConfigBackup.objects.filter(owner=owner).count() == 1


def test_admin_rejects_option_injection(admin_client_, owner):
    client, _ = admin_client_
    form = {
        **tunnel_data(remote_host="-oProxyCommand=x"),
        "owner": owner.pk,
        "direction": "remote_to_local",
        "desired_state": "stopped",
    }
    response = client.post("/admin/tunnels/tunnel/add/", form)
    assert response.status_code == 200
    assert b"must not start with" in response.content
    assert not Tunnel.objects.exists()


def test_anonymous_admin_redirects_to_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_createsuperuser_noinput(monkeypatch, django_user_model):
    from django.core.management import call_command

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pass-xyz")
    call_command("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com")
    user = django_user_model.objects.get(username="boss")
    assert user.is_superuser and user.check_password("s3cret-pass-xyz")


def test_admin_test_connection_action_requests_tests_and_links_to_them(admin_client_, owner):
    from tunnels.models import ConnectionTest

    client, user = admin_client_
    plain, interactive = make_tunnel(owner), make_tunnel(owner, interactive=True)
    response = client.post(
        "/admin/tunnels/tunnel/",
        {"action": "test_connections", "_selected_action": [plain.pk, interactive.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 connection tests requested (1 interactive skipped)" in page
    assert 'href="/admin/tunnels/connectiontest/"' in page
    test = ConnectionTest.objects.get()
    assert (test.tunnel, test.owner, test.requested_by, test.state) == (plain, owner, user, "pending")
    # Read-only in the admin: listed and viewable, never added or changed there.
    assert client.get("/admin/tunnels/connectiontest/").status_code == 200
    assert client.get(f"/admin/tunnels/connectiontest/{test.pk}/change/").status_code == 200
    assert client.get("/admin/tunnels/connectiontest/add/").status_code == 403
