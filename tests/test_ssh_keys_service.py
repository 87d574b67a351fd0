"""The SSH key service layer: generate, upload, limits, delete, the tunnel's ssh_key field, rotation."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.management import call_command

from tests.factories import make_tunnel, tunnel_data
from tunnels import services, sshkeys
from tunnels.models import ConfigBackup, SshKey, Tunnel
from tunnels.services import Actor, InvalidInput, QuotaExceeded
from tunnels.services_keys import (
    DuplicateKey,
    KeyInUse,
    authorized_keys_line,
    delete_key,
    generate_key,
    upload_key,
)

pytestmark = pytest.mark.django_db


def keygen(tmp_path, *args: str) -> str:
    """A private key file made by the real ssh-keygen; returns its text."""
    path = tmp_path / f"key-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ssh-keygen", "-q", *args, "-f", str(path)], check=True)
    return path.read_text()


def pem(key, fmt=serialization.PrivateFormat.PKCS8, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def refused(call, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call()
    assert caught.value.status == 400
    assert field in caught.value.fields, caught.value.fields
    return caught.value


# --- generate ----------------------------------------------------------------


def test_generate_ed25519_by_default(owner):
    key = generate_key(owner, "laptop")
    assert key.algorithm == "ssh-ed25519" and key.bits == 256
    assert key.comment == "tunnelsite:alice:laptop"
    assert key.public_key.startswith("ssh-ed25519 ")
    assert key.fingerprint == sshkeys.fingerprint(key.public_key)
    private = sshkeys.private_key_of(key)
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert private.decode() not in key.private_key_encrypted  # encrypted at rest


def test_generate_rsa_3072(owner):
    key = generate_key(owner, "legacy", algorithm="rsa", bits=3072)
    assert key.algorithm == "ssh-rsa" and key.bits == 3072


@pytest.mark.parametrize(
    ("algorithm", "bits", "field"),
    [
        ("rsa", 2048, "bits"),
        ("rsa", 9000, "bits"),
        ("rsa", "4096", "bits"),
        ("dsa", None, "algorithm"),
        ("ed25519", 4096, "bits"),
    ],
)
def test_generate_refuses_bad_parameters(owner, algorithm, bits, field):
    refused(lambda: generate_key(owner, "k", algorithm=algorithm, bits=bits), field)
    assert not SshKey.objects.exists()


@pytest.mark.parametrize("name", ["", None, "has space", "-dash", "x" * 101, "new\nline", 7])
def test_bad_names_are_refused(owner, name):
    refused(lambda: generate_key(owner, name), "name")


def test_expiry_must_be_in_the_future(owner):
    refused(lambda: generate_key(owner, "k", expires_at="2001-01-01T00:00:00Z"), "expires_at")
    refused(lambda: generate_key(owner, "k", expires_at="soon"), "expires_at")
    refused(lambda: generate_key(owner, "k", expires_at="2999-13-45T00:00:00Z"), "expires_at")
    assert generate_key(owner, "k", expires_at="2999-01-01T00:00:00Z").expires_at.year == 2999


def test_expiry_without_an_offset_is_utc(owner):
    key = generate_key(owner, "k", expires_at="2999-01-01T12:30:00")
    assert key.expires_at.isoformat() == "2999-01-01T12:30:00+00:00"


# --- upload ------------------------------------------------------------------


def test_upload_openssh_ed25519_from_ssh_keygen(owner, tmp_path):
    text = keygen(tmp_path, "-t", "ed25519", "-N", "")
    key = upload_key(owner, "laptop", text)
    assert key.algorithm == "ssh-ed25519"
    assert key.comment == "tunnelsite:alice:laptop"
    assert sshkeys.private_key_of(key).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize(
    ("make", "algorithm", "bits"),
    [
        (lambda: pem(rsa.generate_private_key(65537, 2048)), "ssh-rsa", 2048),
        (
            lambda: pem(rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.TraditionalOpenSSL),
            "ssh-rsa",
            2048,
        ),
        (
            lambda: pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.TraditionalOpenSSL),
            "ecdsa-sha2-nistp256",
            256,
        ),
        (lambda: pem(ec.generate_private_key(ec.SECP384R1())), "ecdsa-sha2-nistp384", 384),
        (lambda: pem(ec.generate_private_key(ec.SECP521R1())), "ecdsa-sha2-nistp521", 521),
        (lambda: pem(ed25519.Ed25519PrivateKey.generate()), "ssh-ed25519", 256),
    ],
    ids=["pkcs8-rsa", "pkcs1-rsa", "sec1-ec256", "pkcs8-ec384", "pkcs8-ec521", "pkcs8-ed25519"],
)
def test_upload_pem_keys(owner, make, algorithm, bits):
    key = upload_key(owner, "k", make())
    assert (key.algorithm, key.bits) == (algorithm, bits)
    # Stored as unencrypted OpenSSH text under our own encryption: what ssh-add reads.
    assert sshkeys.private_key_of(key).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_upload_with_passphrase_is_stored_reencrypted(owner, tmp_path):
    text = keygen(tmp_path, "-t", "ed25519", "-N", "s3cret pass")
    key = upload_key(owner, "laptop", text, passphrase="s3cret pass")
    plain = sshkeys.private_key_of(key)
    loaded = serialization.load_ssh_private_key(plain, None)  # no passphrase needed any more
    assert sshkeys.public_line(loaded) == key.public_key
    assert b"s3cret" not in plain


def test_upload_pem_with_passphrase(owner):
    key = upload_key(owner, "k", pem(rsa.generate_private_key(65537, 2048), password=b"pw"), passphrase="pw")
    assert key.algorithm == "ssh-rsa"


@pytest.mark.parametrize("passphrase", [None, "", "wrong"])
def test_wrong_or_missing_passphrase_is_400_naming_passphrase(owner, tmp_path, passphrase):
    text = keygen(tmp_path, "-t", "ed25519", "-N", "right")
    error = refused(lambda: upload_key(owner, "k", text, passphrase=passphrase), "passphrase")
    assert "passphrase" in error.message
    assert not SshKey.objects.exists()


def test_dsa_is_refused(owner, tmp_path):
    error = refused(lambda: upload_key(owner, "k", keygen(tmp_path, "-t", "dsa", "-N", "")), "private_key")
    assert "DSA" in error.message


def test_rsa_1024_is_refused(owner, tmp_path):
    error = refused(
        lambda: upload_key(owner, "k", keygen(tmp_path, "-t", "rsa", "-b", "1024", "-N", "")), "private_key"
    )
    assert "2048" in error.message


def test_unsupported_curve_is_refused(owner):
    error = refused(lambda: upload_key(owner, "k", pem(ec.generate_private_key(ec.SECP256K1()))), "private_key")
    assert "curve" in error.message


@pytest.mark.parametrize(
    "text",
    ["garbage", "", None, 42, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"],
)
def test_garbage_is_400_saying_what_was_expected(owner, text):
    error = refused(lambda: upload_key(owner, "k", text), "private_key")
    assert "OPENSSH PRIVATE KEY" in error.message


def test_a_public_key_is_400_and_not_echoed(owner, tmp_path):
    keygen(tmp_path, "-t", "ed25519", "-N", "")
    public = next(tmp_path.glob("*.pub")).read_text()
    error = refused(lambda: upload_key(owner, "k", public), "private_key")
    assert "public key" in error.message
    assert public.split()[1] not in error.message


def test_errors_never_echo_key_material(owner, tmp_path):
    text = keygen(tmp_path, "-t", "ed25519", "-N", "right")
    body = text.splitlines()[1]
    for call in (
        lambda: upload_key(owner, "k", text, passphrase="wrong"),
        lambda: upload_key(owner, "k", text[:-40]),
        lambda: upload_key(owner, "k", keygen(tmp_path, "-t", "dsa", "-N", "")),
    ):
        with pytest.raises(InvalidInput) as caught:
            call()
        assert body not in caught.value.message and "right" not in caught.value.message


# --- limits and duplicates -----------------------------------------------------


def test_limit_reached_is_403(owner, settings):
    settings.MAX_SSH_KEYS = 2
    generate_key(owner, "a")
    generate_key(owner, "b")
    with pytest.raises(QuotaExceeded) as caught:
        generate_key(owner, "c")
    assert caught.value.status == 403 and "at most 2" in caught.value.message
    with pytest.raises(QuotaExceeded):
        upload_key(owner, "c", pem(ed25519.Ed25519PrivateKey.generate()))
    assert SshKey.objects.count() == 2


def test_duplicate_name_is_409(owner, other):
    generate_key(owner, "laptop")
    with pytest.raises(DuplicateKey) as caught:
        generate_key(owner, "laptop")
    assert caught.value.status == 409 and "laptop" in caught.value.message
    generate_key(other, "laptop")  # names are per owner


def test_same_key_twice_is_409_naming_the_first(owner, other):
    text = pem(ed25519.Ed25519PrivateKey.generate())
    upload_key(owner, "first", text)
    with pytest.raises(DuplicateKey) as caught:
        upload_key(owner, "second", text)
    assert "'first'" in caught.value.message
    upload_key(other, "theirs", text)  # another user may hold the same key


# --- delete ------------------------------------------------------------------


def test_delete_unused_key(owner):
    key = generate_key(owner, "laptop")
    delete_key(key)
    assert not SshKey.objects.exists()


def test_delete_in_use_is_409_naming_the_tunnels(owner):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, name="web", ssh_key=str(key.pk))
    make_tunnel(owner, name="db", ssh_key=str(key.pk))
    with pytest.raises(KeyInUse) as caught:
        delete_key(key)
    assert caught.value.status == 409
    assert caught.value.message == "key 'laptop' is used by tunnels: db, web; attach another key first"
    assert SshKey.objects.filter(pk=key.pk).exists()


# --- the tunnel's ssh_key -------------------------------------------------------


def test_a_new_tunnel_gets_the_owners_only_key(owner):
    assert make_tunnel(owner).ssh_key_id is None  # no key yet
    key = generate_key(owner, "laptop")
    assert make_tunnel(owner).ssh_key_id == key.pk
    generate_key(owner, "second")
    assert make_tunnel(owner).ssh_key_id is None  # several: the user chooses
    assert make_tunnel(owner, ssh_key=str(key.pk)).ssh_key_id == key.pk
    assert make_tunnel(owner, ssh_key=None).ssh_key_id is None


def test_another_users_key_is_refused_like_an_unknown_id(owner, other):
    theirs = generate_key(other, "theirs")
    answers = []
    for value in (str(theirs.pk), str(uuid.uuid4()), "not-a-uuid", 12):
        with pytest.raises(InvalidInput) as caught:
            make_tunnel(owner, ssh_key=value)
        answers.append((caught.value.status, caught.value.message, caught.value.fields))
    assert answers[0] == (400, "ssh_key: no such key", {"ssh_key": ["no such key"]})
    assert len(set(map(repr, answers))) == 1
    assert not Tunnel.objects.exists()


def test_update_with_another_users_key_changes_nothing(owner, other):
    mine = generate_key(owner, "mine")
    tunnel = make_tunnel(owner)
    theirs = generate_key(other, "theirs")
    backups = ConfigBackup.objects.count()
    for partial in (True, False):
        with pytest.raises(InvalidInput):
            services.update_tunnel(tunnel, {**tunnel_data(), "ssh_key": str(theirs.pk)}, partial=partial)
    tunnel.refresh_from_db()
    assert tunnel.ssh_key_id == mine.pk and ConfigBackup.objects.count() == backups


def test_changing_the_key_bumps_generation_and_takes_a_backup(owner):
    first = generate_key(owner, "first")
    tunnel = make_tunnel(owner)
    assert tunnel.ssh_key_id == first.pk
    second = generate_key(owner, "second")
    backups, generation = ConfigBackup.objects.count(), tunnel.generation
    tunnel = services.update_tunnel(tunnel, {"ssh_key": str(second.pk)}, partial=True)
    assert tunnel.ssh_key_id == second.pk and tunnel.generation == generation + 1
    assert ConfigBackup.objects.count() == backups + 1
    # The same key again is no change: no backup, no restart.
    services.update_tunnel(tunnel, {"ssh_key": str(second.pk)}, partial=True)
    tunnel.refresh_from_db()
    assert tunnel.generation == generation + 1 and ConfigBackup.objects.count() == backups + 1


def test_an_update_without_ssh_key_keeps_it(owner):
    key = generate_key(owner, "laptop")
    tunnel = make_tunnel(owner)
    generate_key(owner, "other")
    data = {field: getattr(tunnel, field) for field in ("remote_host", "remote_port", "local_port")}
    tunnel = services.update_tunnel(tunnel, {**data, "name": "renamed"})
    assert tunnel.ssh_key_id == key.pk


def test_replace_all_keeps_unsent_keys_and_applies_sent_ones(owner, other):
    first = generate_key(owner, "first")
    kept = make_tunnel(owner, name="kept")
    changed = make_tunnel(owner, name="changed")
    second = generate_key(owner, "second")
    items = [kept.compat_dict(), {**changed.compat_dict(), "ssh_key": str(second.pk)}]
    services.replace_all(owner, items)
    kept.refresh_from_db()
    changed_after = Tunnel.objects.get(pk=changed.pk)
    assert kept.ssh_key_id == first.pk and kept.generation == 1
    assert changed_after.ssh_key_id == second.pk and changed_after.generation == changed.generation + 1
    theirs = generate_key(other, "theirs")
    with pytest.raises(InvalidInput) as caught:
        services.replace_all(owner, [{**kept.compat_dict(), "ssh_key": str(theirs.pk)}])
    assert caught.value.fields == {"ssh_key": ["no such key"]}
    assert Tunnel.objects.owned_by(owner).count() == 2


def test_backup_and_restore_keep_the_key(owner):
    first = generate_key(owner, "first")
    tunnel = make_tunnel(owner)
    second = generate_key(owner, "second")
    services.update_tunnel(tunnel, {"ssh_key": str(second.pk)}, partial=True)
    backup = ConfigBackup.objects.order_by("-created_at").first()  # taken before the change
    assert backup.tunnels[0]["ssh_key"] == str(first.pk)
    services.restore_backup(backup, Actor(user=owner))
    assert Tunnel.objects.get(owner=owner).ssh_key_id == first.pk


def test_restore_of_a_deleted_key_keeps_the_current_one(owner):
    old = generate_key(owner, "old")
    tunnel = make_tunnel(owner)
    new = generate_key(owner, "new")
    services.update_tunnel(tunnel, {"ssh_key": str(new.pk)}, partial=True)
    backup = ConfigBackup.objects.order_by("-created_at").first()
    delete_key(old)
    services.restore_backup(backup, Actor(user=owner))
    assert Tunnel.objects.get(owner=owner).ssh_key_id == new.pk


# --- the authorized_keys line ---------------------------------------------------


def test_line_for_a_key_no_tunnel_uses_permits_nothing(owner):
    key = generate_key(owner, "laptop")
    assert authorized_keys_line(key) == f"restrict {key.public_key} tunnelsite:alice:laptop"


def test_line_for_L_and_R_tunnels(owner):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, name="a", remote_port="8080", ssh_key=str(key.pk))
    make_tunnel(owner, name="b", remote_port="db.internal:5432", ssh_key=str(key.pk))
    make_tunnel(owner, name="c", remote_port="[::1]:9000", ssh_key=str(key.pk))
    make_tunnel(owner, name="d", remote_port="8080", local_port="28999", ssh_key=str(key.pk))  # same permit
    make_tunnel(owner, name="e", remote_port="2222", direction="local_to_remote", ssh_key=str(key.pk))
    make_tunnel(owner, name="f", remote_port="0.0.0.0:2223", direction="local_to_remote", ssh_key=str(key.pk))
    make_tunnel(owner, name="g", remote_port="9999", ssh_key=None)  # another key's business
    assert authorized_keys_line(key) == (
        'restrict,port-forwarding,permitopen="[::1]:9000",permitopen="db.internal:5432",'
        'permitopen="localhost:8080",permitlisten="0.0.0.0:2223",permitlisten="localhost:2222" '
        f"{key.public_key} tunnelsite:alice:laptop"
    )


def test_a_direction_no_tunnel_uses_stays_closed(owner):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, remote_port="8080", ssh_key=str(key.pk))
    assert 'permitopen="localhost:8080",permitlisten="NONE.INVALID:1" ' in authorized_keys_line(key)
    other_key = generate_key(owner, "other")
    make_tunnel(owner, remote_port="2222", direction="local_to_remote", ssh_key=str(other_key.pk))
    assert 'permitopen="none.invalid:1",permitlisten="localhost:2222" ' in authorized_keys_line(other_key)


def test_line_with_from(owner):
    key = generate_key(owner, "laptop")
    line = authorized_keys_line(key, "127.0.0.1,10.0.0.0/8,::1,!192.0.2.1,*.example.com")
    assert line.startswith('restrict,from="127.0.0.1,10.0.0.0/8,::1,!192.0.2.1,*.example.com" ssh-ed25519 ')
    assert authorized_keys_line(key, ["127.0.0.1"]).startswith('restrict,from="127.0.0.1" ')
    assert authorized_keys_line(key, "127.0.0.1, ::1").startswith('restrict,from="127.0.0.1,::1" ')


@pytest.mark.parametrize(
    "value",
    ['127.0.0.1"', "10.0.0.1/8", "a b", "-x", "1.2.3.4,", "fe80::1%eth0", "10.0.0.0/33", 'x",command="sh', "a\nb"],
)
def test_bad_from_is_400(owner, value):
    key = generate_key(owner, "laptop")
    refused(lambda: authorized_keys_line(key, value), "from")


def test_a_stored_value_that_would_break_the_line_is_refused(owner):
    key = generate_key(owner, "laptop")
    tunnel = make_tunnel(owner, name="old", ssh_key=str(key.pk))
    Tunnel.objects.filter(pk=tunnel.pk).update(remote_port='x"y:80')  # an old row, past validation
    with pytest.raises(services.ServiceError) as caught:
        authorized_keys_line(key)
    assert caught.value.status == 409 and "old" in caught.value.message


def test_ssh_keygen_parses_the_line(owner, tmp_path):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, remote_port="8080", ssh_key=str(key.pk))
    make_tunnel(owner, remote_port="[::1]:2222", direction="local_to_remote", ssh_key=str(key.pk))
    path = tmp_path / "authorized_keys"
    path.write_text(authorized_keys_line(key, "127.0.0.1,10.0.0.0/8") + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    assert key.fingerprint in out and "tunnelsite:alice:laptop" in out


# --- rotation ------------------------------------------------------------------


def test_rotatesshkeys_reencrypts_under_the_new_pepper(owner, settings):
    settings.TOKEN_PEPPER = "old-pepper-" + "x" * 32
    settings.TOKEN_OLD_PEPPERS = {}
    key = generate_key(owner, "laptop")
    plain = sshkeys.private_key_of(key)
    # Rotate the secret: the old pepper listed still decrypts.
    settings.TOKEN_PEPPER = "new-pepper-" + "y" * 32
    settings.TOKEN_OLD_PEPPERS = {"old": "old-pepper-" + "x" * 32}
    assert sshkeys.private_key_of(key) == plain
    call_command("rotatesshkeys", stdout=open("/dev/null", "w"))  # noqa: SIM115
    key.refresh_from_db()
    # After rotation the old pepper can go.
    settings.TOKEN_OLD_PEPPERS = {}
    assert sshkeys.private_key_of(key) == plain


def test_without_rotation_dropping_the_old_pepper_loses_the_key(owner, settings):
    settings.TOKEN_PEPPER = "old-pepper-" + "x" * 32
    key = generate_key(owner, "laptop")
    settings.TOKEN_PEPPER = "new-pepper-" + "y" * 32
    settings.TOKEN_OLD_PEPPERS = {}
    with pytest.raises(sshkeys.KeyUnavailable):
        sshkeys.private_key_of(key)
