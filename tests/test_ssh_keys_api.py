"""/api/v1/ssh-keys/ and the tunnels' ssh_key field on both API surfaces."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.conftest import client_for
from tests.factories import make_tunnel, tunnel_data
from tunnels import sshkeys
from tunnels.models import ConfigBackup, SshKey, Tunnel
from tunnels.services_keys import generate_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/ssh-keys/"
KEY_FIELDS = {
    *("id", "name", "owner", "algorithm", "bits", "public_key", "fingerprint", "comment", "tunnel_count"),
    *("created_at", "last_used_at", "expires_at"),
}


def key_url(key, suffix: str = "") -> str:
    return f"{URL}{key.pk if isinstance(key, SshKey) else key}/{suffix}"


def assert_no_private_material(response, *secrets: str) -> None:
    body = response.content.decode()
    assert "PRIVATE KEY" not in body
    for secret in secrets:
        assert secret not in body


def decrypted(key: SshKey) -> str:
    return sshkeys.private_key_of(key).decode()


def secret_lines(key: SshKey) -> list[str]:
    """The base64 body lines of a key's decrypted private half (what must never leak)."""
    return [line for line in decrypted(key).splitlines() if "-----" not in line]


# --- create -------------------------------------------------------------------


def test_post_name_generates_ed25519(owner, owner_client):
    response = owner_client.post(URL, {"name": "laptop"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == KEY_FIELDS
    assert body["algorithm"] == "ssh-ed25519" and body["bits"] == 256
    assert body["comment"] == "tunnelsite:alice:laptop" and body["tunnel_count"] == 0
    key = SshKey.objects.get(pk=body["id"])
    assert body["public_key"] == key.public_key and body["fingerprint"] == key.fingerprint
    assert_no_private_material(response, *secret_lines(key), key.private_key_encrypted)


def test_post_rsa(owner_client):
    response = owner_client.post(URL, {"name": "legacy", "algorithm": "rsa", "bits": 3072}, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["algorithm"], response.json()["bits"]) == ("ssh-rsa", 3072)


def test_upload_with_passphrase(owner_client, tmp_path):
    private = ed25519.Ed25519PrivateKey.generate()
    text = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.BestAvailableEncryption(b"pw")
    ).decode()
    wrong = owner_client.post(URL, {"name": "k", "private_key": text, "passphrase": "nope"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["fields"] == {"passphrase": ["wrong passphrase for this key"]}
    assert_no_private_material(wrong, *text.splitlines()[1:-1])
    response = owner_client.post(URL, {"name": "k", "private_key": text, "passphrase": "pw"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["public_key"] == sshkeys.public_line(private)
    assert_no_private_material(response, *secret_lines(SshKey.objects.get()), 'pw"')


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "k", "algorithm": "dsa"}, "algorithm"),
        ({"name": "k", "algorithm": "rsa", "bits": 1024}, "bits"),
        ({"name": "k", "private_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA x"}, "private_key"),
        ({"name": "k", "private_key": "hello"}, "private_key"),
        ({"name": "k", "passphrase": "x"}, "passphrase"),
        ({"name": "k", "surprise": 1}, "surprise"),
    ],
)
def test_bad_create_bodies_are_400_with_fields(owner_client, body, field):
    response = owner_client.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not SshKey.objects.exists()


def test_a_non_object_body_is_400(owner_client):
    response = owner_client.post(URL, ["name"], format="json")
    assert response.status_code == 400 and "error" in response.json()


def test_limit_is_403_and_duplicate_is_409(owner_client, settings):
    settings.MAX_SSH_KEYS = 1
    assert owner_client.post(URL, {"name": "a"}, format="json").status_code == 201
    settings.MAX_SSH_KEYS = 2
    duplicate = owner_client.post(URL, {"name": "a"}, format="json")
    assert duplicate.status_code == 409 and duplicate.json() == {"error": "you already have a key named 'a'"}
    assert owner_client.post(URL, {"name": "b"}, format="json").status_code == 201
    full = owner_client.post(URL, {"name": "c"}, format="json")
    assert full.status_code == 403 and "at most 2" in full.json()["error"]


def test_scopes(owner):
    reader = client_for(owner, ["read"])
    assert reader.post(URL, {"name": "k"}, format="json").status_code == 403
    key = generate_key(owner, "k")
    assert reader.get(URL).status_code == 200
    assert reader.get(key_url(key, "authorized-keys/")).status_code == 200
    assert reader.delete(key_url(key)).status_code == 403
    writer = client_for(owner, ["write"])
    assert writer.delete(key_url(key)).status_code == 204


# --- read ---------------------------------------------------------------------


def test_list_and_retrieve(owner, other, owner_client):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, ssh_key=str(key.pk))
    generate_key(other, "theirs")
    page = owner_client.get(URL).json()
    assert page["total"] == 1 and page["entries"][0]["name"] == "laptop"
    assert page["entries"][0]["tunnel_count"] == 1
    one = owner_client.get(key_url(key))
    assert one.status_code == 200 and one.json()["id"] == str(key.pk)
    assert_no_private_material(one, *secret_lines(key))


@pytest.mark.parametrize("count", [1, 15])
def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries, settings, count):
    settings.MAX_SSH_KEYS = 20
    for index in range(count):
        key = generate_key(owner, f"k{index}")
        make_tunnel(owner, ssh_key=str(key.pk))
    owner_client.get(URL)
    # token lookup, count, page (with owners and tunnel counts), request-history insert
    with django_assert_num_queries(4):
        response = owner_client.get(URL, {"limit": 1000})
    assert response.json()["total"] == count


def test_another_users_key_is_404_on_every_endpoint(owner, other, other_client):
    key = generate_key(owner, "laptop")
    for method, suffix in (
        ("get", ""),
        ("delete", ""),
        ("get", "authorized-keys/"),
        ("get", "authorized-keys/?format=text"),
    ):
        response = getattr(other_client, method)(key_url(key, suffix))
        assert response.status_code == 404, (method, suffix)
        assert response.json() == {"error": "Not found."}
    for bad in (uuid.uuid4(), "not-a-uuid"):
        assert other_client.get(key_url(bad)).json() == {"error": "Not found."}
    assert SshKey.objects.filter(pk=key.pk).exists()


def test_staff_acting_as_admin_sees_everyones(owner, staff):
    generate_key(owner, "laptop")
    generate_key(staff, "own")
    admin = client_for(staff, ["read", "admin"])
    assert admin.get(URL).json()["total"] == 2
    assert [e["name"] for e in admin.get(URL, {"owner": "alice"}).json()["entries"]] == ["laptop"]
    assert [e["name"] for e in client_for(staff, ["read"]).get(URL).json()["entries"]] == ["own"]


# --- delete -------------------------------------------------------------------


def test_delete_in_use_is_409_naming_tunnels(owner, owner_client):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, name="web", ssh_key=str(key.pk))
    make_tunnel(owner, name="db", ssh_key=str(key.pk))
    response = owner_client.delete(key_url(key))
    assert response.status_code == 409
    assert response.json()["error"] == "key 'laptop' is used by tunnels: db, web; attach another key first"
    Tunnel.objects.update(ssh_key=None)
    assert owner_client.delete(key_url(key)).status_code == 204
    assert not SshKey.objects.exists()


# --- authorized-keys -------------------------------------------------------------


def test_authorized_keys_json_and_text(owner, owner_client):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, name="web", remote_port="8080", ssh_key=str(key.pk))
    make_tunnel(owner, name="back", remote_port="2222", direction="local_to_remote", ssh_key=str(key.pk))
    response = owner_client.get(key_url(key, "authorized-keys/"), {"from": "127.0.0.1,10.0.0.0/8"})
    assert response.status_code == 200
    expected = (
        'restrict,port-forwarding,permitopen="localhost:8080",permitlisten="localhost:2222",'
        f'from="127.0.0.1,10.0.0.0/8" {key.public_key} tunnelsite:alice:laptop'
    )
    assert response.json() == {"line": expected, "tunnels": ["back", "web"]}
    text = owner_client.get(key_url(key, "authorized-keys/"), {"format": "text", "from": "127.0.0.1,10.0.0.0/8"})
    assert text.status_code == 200 and text["Content-Type"].startswith("text/plain")
    assert text.content.decode() == expected + "\n"
    assert_no_private_material(text, *secret_lines(key))


def test_authorized_keys_bad_from_is_json_400_even_as_text(owner, owner_client):
    key = generate_key(owner, "laptop")
    for params in ({"from": 'x",command="sh'}, {"from": "10.0.0.1/8", "format": "text"}):
        response = owner_client.get(key_url(key, "authorized-keys/"), params)
        assert response.status_code == 400 and response["Content-Type"] == "application/json"
        assert "from" in response.json()["fields"]


# --- the tunnel field, REST ------------------------------------------------------


def test_rest_tunnel_shows_and_sets_ssh_key(owner, owner_client):
    first = generate_key(owner, "first")
    created = owner_client.post("/api/v1/tunnels/", tunnel_data(), format="json")
    assert created.status_code == 201
    assert (created.json()["ssh_key"], created.json()["ssh_key_name"]) == (str(first.pk), "first")
    second = generate_key(owner, "second")
    tunnel_id = created.json()["id"]
    patched = owner_client.patch(f"/api/v1/tunnels/{tunnel_id}/", {"ssh_key": str(second.pk)}, format="json")
    assert patched.status_code == 200 and patched.json()["ssh_key_name"] == "second"
    listed = owner_client.get("/api/v1/tunnels/").json()["entries"][0]
    assert (listed["ssh_key"], listed["ssh_key_name"]) == (str(second.pk), "second")
    cleared = owner_client.patch(f"/api/v1/tunnels/{tunnel_id}/", {"ssh_key": None}, format="json")
    assert (cleared.json()["ssh_key"], cleared.json()["ssh_key_name"]) == (None, None)
    assert owner_client.get(f"/api/v1/tunnels/{tunnel_id}/").json()["ssh_key"] is None


def test_rest_naming_another_users_key_is_the_same_400_as_a_random_id(owner, other, owner_client):
    theirs = generate_key(other, "theirs")
    mine = generate_key(owner, "mine")
    tunnel = make_tunnel(owner)
    backups = ConfigBackup.objects.count()
    answers = []
    for value in (str(theirs.pk), str(uuid.uuid4())):
        create = owner_client.post("/api/v1/tunnels/", tunnel_data(ssh_key=value), format="json")
        patch = owner_client.patch(f"/api/v1/tunnels/{tunnel.uuid}/", {"ssh_key": value}, format="json")
        put = owner_client.put(f"/api/v1/tunnels/{tunnel.uuid}/", tunnel_data(ssh_key=value), format="json")
        answers += [(r.status_code, r.json()) for r in (create, patch, put)]
    assert answers[0] == (400, {"error": "ssh_key: no such key", "fields": {"ssh_key": ["no such key"]}})
    assert all(answer == answers[0] for answer in answers)
    tunnel.refresh_from_db()
    assert tunnel.ssh_key_id == mine.pk and Tunnel.objects.count() == 1
    assert ConfigBackup.objects.count() == backups


# --- the tunnel field, compat -------------------------------------------------------


def test_compat_keeps_the_key_when_not_sent_and_shows_it(owner, owner_client):
    key = generate_key(owner, "laptop")
    added = owner_client.post("/config/new", tunnel_data(name="web"), format="json")
    assert added.status_code == 201 and added.json()["ssh_key"] == str(key.pk)
    generate_key(owner, "other")  # with two keys there is no default any more
    tunnel = Tunnel.objects.get(name="web")
    body = {**tunnel.compat_dict(), "name": "web2"}
    body.pop("hash")
    updated = owner_client.post(f"/config/{tunnel.hash}", body, format="json")
    assert updated.status_code == 200 and updated.json()["ssh_key"] == str(key.pk)
    edited = owner_client.post("/edit", {**body, "name": "web3", "hash": updated.json()["hash"]}, format="json")
    assert edited.status_code == 200
    config = owner_client.get("/config").json()["tunnels"]
    assert config[0]["ssh_key"] == str(key.pk)
    # Replace-all with the original client's fields only: the key stays.
    plain = {field: config[0][field] for field in ("name", "remote_host", "remote_port", "local_port")}
    assert owner_client.post("/config", {"tunnels": [plain]}, format="json").status_code == 200
    assert Tunnel.objects.get().ssh_key_id == key.pk


def test_compat_naming_another_users_key_is_the_same_400_as_a_random_id(owner, other, owner_client):
    theirs = generate_key(other, "theirs")
    tunnel = make_tunnel(owner)
    before = tunnel.compat_dict()
    answers = []
    for value in (str(theirs.pk), str(uuid.uuid4())):
        body = {**tunnel_data(), "ssh_key": value}
        answers.append(owner_client.post("/config/new", body, format="json"))
        answers.append(owner_client.post(f"/config/{tunnel.hash}", body, format="json"))
        answers.append(owner_client.post("/edit", {**body, "hash": tunnel.hash}, format="json"))
        answers.append(owner_client.post("/config", {"tunnels": [body]}, format="json"))
    assert {response.status_code for response in answers} == {400}
    assert {response.json()["error"].removeprefix("tunnels[0]: ") for response in answers} == {"ssh_key: no such key"}
    assert [t.compat_dict() for t in Tunnel.objects.all()] == [before]
