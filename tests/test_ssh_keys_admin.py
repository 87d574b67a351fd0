"""The admin's SSH key pages: listing, adding through generate_key, no private key anywhere; a tunnel's key."""

from __future__ import annotations

import pytest

from tests.factories import make_tunnel, tunnel_data
from tunnels import sshkeys
from tunnels.models import SshKey, Tunnel
from tunnels.services_keys import generate_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return client


def secret_line(key: SshKey) -> str:
    return sshkeys.private_key_of(key).decode().splitlines()[1]


def test_list_and_change_pages_never_show_the_private_key(admin_client_, owner):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, ssh_key=str(key.pk))
    for url in ("/admin/tunnels/sshkey/", f"/admin/tunnels/sshkey/{key.pk}/change/", "/admin/tunnels/sshkey/?q=alice"):
        response = admin_client_.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert "laptop" in body and key.fingerprint in body
        assert "PRIVATE KEY" not in body and secret_line(key) not in body
        assert key.private_key_encrypted not in body and "private_key_encrypted" not in body


def test_add_generates_through_the_service_layer(admin_client_, owner):
    response = admin_client_.post(
        "/admin/tunnels/sshkey/add/", {"owner": owner.pk, "name": "from-admin", "algorithm": "ed25519"}
    )
    assert response.status_code == 302, response.content[:2000]
    key = SshKey.objects.get(name="from-admin")
    assert key.owner == owner and key.comment == "tunnelsite:alice:from-admin"
    assert sshkeys.private_key_of(key).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_add_cannot_take_key_material(admin_client_, owner):
    response = admin_client_.post(
        "/admin/tunnels/sshkey/add/",
        {
            "owner": owner.pk,
            "name": "x",
            "algorithm": "ed25519",
            "private_key_encrypted": "attacker",
            "public_key": "x",
        },
    )
    assert response.status_code == 302
    key = SshKey.objects.get(name="x")
    assert key.private_key_encrypted != "attacker" and key.public_key.startswith("ssh-ed25519 ")


def test_add_duplicate_shows_the_service_error(admin_client_, owner):
    generate_key(owner, "laptop")
    response = admin_client_.post(
        "/admin/tunnels/sshkey/add/", {"owner": owner.pk, "name": "laptop", "algorithm": "ed25519"}
    )
    assert response.status_code == 200 and "already have a key named" in response.content.decode()
    assert SshKey.objects.count() == 1


def test_change_page_edits_nothing(admin_client_, owner):
    key = generate_key(owner, "laptop")
    response = admin_client_.post(f"/admin/tunnels/sshkey/{key.pk}/change/", {"name": "renamed", "owner": owner.pk})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "laptop"


def test_delete_in_use_is_refused_with_a_message(admin_client_, owner):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, name="web", ssh_key=str(key.pk))
    response = admin_client_.post(f"/admin/tunnels/sshkey/{key.pk}/delete/", {"post": "yes"}, follow=True)
    # Django's own check of the PROTECT foreign key names the tunnels before delete_key is reached.
    body = response.content.decode()
    assert "Cannot delete ssh key" in body and "web" in body
    assert SshKey.objects.filter(pk=key.pk).exists()


def test_tunnel_admin_accepts_only_the_owners_keys(admin_client_, owner, other):
    mine = generate_key(owner, "mine")
    theirs = generate_key(other, "theirs")
    form = {
        **tunnel_data(name="from-admin"),
        "owner": owner.pk,
        "direction": "remote_to_local",
        "desired_state": "stopped",
        "auto_restart": "on",
    }
    response = admin_client_.post("/admin/tunnels/tunnel/add/", {**form, "ssh_key": theirs.pk})
    assert response.status_code == 200 and "no such key" in response.content.decode()
    assert not Tunnel.objects.exists()
    response = admin_client_.post("/admin/tunnels/tunnel/add/", {**form, "ssh_key": mine.pk})
    assert response.status_code == 302, response.content[:2000]
    tunnel = Tunnel.objects.get(name="from-admin")
    assert tunnel.ssh_key_id == mine.pk
    other_key = generate_key(owner, "second")
    response = admin_client_.post(f"/admin/tunnels/tunnel/{tunnel.pk}/change/", {**form, "ssh_key": other_key.pk})
    assert response.status_code == 302
    tunnel.refresh_from_db()
    assert tunnel.ssh_key_id == other_key.pk and tunnel.generation == 2
