"""Dashboard: the SSH keys page (/keys/): generate, upload, the authorized_keys line, delete."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.test import Client

from tests.factories import make_tunnel
from tunnels import services_keys
from tunnels.models import SshKey

pytestmark = pytest.mark.django_db
URL = "/keys/"


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def openssh_key(passphrase: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption).decode()


def test_generate_ed25519_shows_fingerprint_and_line(alice, owner):
    response = alice.post(f"{URL}generate/", {"generate-name": "laptop", "generate-algorithm": "ed25519"})
    assert response.status_code == 302
    key = SshKey.objects.get(owner=owner)
    page = alice.get(URL).content.decode()
    assert key.fingerprint in page
    assert services_keys.authorized_keys_line(key) in page.replace("&quot;", '"')
    assert "PRIVATE KEY" not in page


def test_generate_refusal_is_shown_beside_the_field(alice):
    response = alice.post(f"{URL}generate/", {"generate-name": "-bad", "generate-algorithm": "ed25519"})
    assert response.status_code == 400
    assert "not starting with a symbol" in response.content.decode()
    body = {"generate-name": "k", "generate-algorithm": "ed25519", "generate-bits": 4096}
    response = alice.post(f"{URL}generate/", body)
    assert response.status_code == 400 and "only RSA keys take a size" in response.content.decode()
    assert not SshKey.objects.exists()


def test_upload_with_passphrase(alice, owner):
    text = openssh_key(b"pw")
    wrong = alice.post(f"{URL}upload/", {"upload-name": "k", "upload-private_key": text, "upload-passphrase": "no"})
    assert wrong.status_code == 400 and "wrong passphrase" in wrong.content.decode()
    assert "OPENSSH PRIVATE KEY" not in wrong.content.decode()  # the pasted key is not echoed back
    right = alice.post(f"{URL}upload/", {"upload-name": "k", "upload-private_key": text, "upload-passphrase": "pw"})
    assert right.status_code == 302 and SshKey.objects.get().owner == owner


def test_duplicate_is_409_with_the_services_message(alice, owner):
    services_keys.generate_key(owner, "laptop")
    response = alice.post(f"{URL}generate/", {"generate-name": "laptop", "generate-algorithm": "ed25519"})
    assert response.status_code == 409 and "already have a key named" in response.content.decode()


def test_list_is_scoped_and_constant_in_queries(alice, owner, other, django_assert_num_queries):
    theirs = services_keys.generate_key(other, "theirs")
    for number in range(3):
        key = services_keys.generate_key(owner, f"k{number}")
        make_tunnel(owner, name=f"web{number}", ssh_key=str(key.pk))
    with django_assert_num_queries(4):  # session, user, keys (+ owner), their tunnels
        page = alice.get(URL).content.decode()
    assert theirs.fingerprint not in page
    assert page.count('data-copy="restrict,port-forwarding,permitopen=') == 3


def test_delete_asks_then_deletes(alice, owner):
    key = services_keys.generate_key(owner, "old")
    assert alice.get(f"{URL}{key.pk}/delete/").status_code == 200
    assert SshKey.objects.exists()
    assert alice.post(f"{URL}{key.pk}/delete/").status_code == 302
    assert not SshKey.objects.exists()


def test_deleting_a_key_in_use_is_409_naming_the_tunnel(alice, owner):
    key = services_keys.generate_key(owner, "used")
    make_tunnel(owner, name="web", ssh_key=str(key.pk))
    response = alice.post(f"{URL}{key.pk}/delete/")
    assert response.status_code == 409
    assert "key &#x27;used&#x27; is used by tunnels: web" in response.content.decode()
    assert SshKey.objects.filter(pk=key.pk).exists()


def test_another_users_key_is_404(alice, other):
    key = services_keys.generate_key(other, "theirs")
    assert alice.get(f"{URL}{key.pk}/delete/").status_code == 404
    assert alice.post(f"{URL}{key.pk}/delete/").status_code == 404
    assert SshKey.objects.filter(pk=key.pk).exists()


def test_changes_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    key = services_keys.generate_key(owner, "kept")
    assert client.post(f"{URL}generate/", {"generate-name": "x"}).status_code == 403
    assert client.post(f"{URL}upload/", {"upload-name": "y"}).status_code == 403
    assert client.post(f"{URL}{key.pk}/delete/").status_code == 403
    assert list(SshKey.objects.values_list("name", flat=True)) == ["kept"]


def test_expiry_is_passed_to_the_service(alice, owner):
    body = {"generate-name": "k", "generate-algorithm": "ed25519", "generate-expires_at": "2020-01-01T00:00"}
    response = alice.post(f"{URL}generate/", body)
    assert response.status_code == 400 and "must be in the future" in response.content.decode()
    body["generate-expires_at"] = "2099-01-01T12:30"
    assert alice.post(f"{URL}generate/", body).status_code == 302
    assert SshKey.objects.get(owner=owner).expires_at.isoformat() == "2099-01-01T12:30:00+00:00"
