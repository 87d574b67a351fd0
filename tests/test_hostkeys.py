"""tunnels.hostkeys without a worker: parsing, the owner's file, the precondition, accept/delete/pre-seed."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels import hostkeys, services, sshkeys
from tunnels.models import HostKeyState, KnownHost, Tunnel
from tunnelsite.errors import InvalidInput

pytestmark = pytest.mark.django_db


def new_key(algorithm: str = sshkeys.ED25519) -> tuple[str, str]:
    """(key_type, base64) of a fresh public key."""
    key_type, blob = sshkeys.public_line(
        sshkeys.new_private_key(algorithm, 3072 if algorithm == "rsa" else None)
    ).split()
    return key_type, blob


def fixed_key(seed: int) -> tuple[str, str]:
    """(key_type, base64) of an ed25519 key made from ``seed``: the same in every process, so the test ids
    built from it are too (parallel runs compare their collections)."""
    key_type, blob = sshkeys.public_line(Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)).split()
    return key_type, blob


KEY_TYPE, KEY = fixed_key(1)
OTHER_TYPE, OTHER = fixed_key(2)


# --- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,expected",
    [
        (f"example.org {KEY_TYPE} {KEY}", [("example.org", 22)]),
        (f"Example.ORG {KEY_TYPE} {KEY} comment here", [("example.org", 22)]),
        (f"[127.0.0.1]:2222 {KEY_TYPE} {KEY}", [("127.0.0.1", 2222)]),
        (f"[::1]:2222 {KEY_TYPE} {KEY}", [("::1", 2222)]),
        (f"::1 {KEY_TYPE} {KEY}", [("::1", 22)]),
        (
            f"a.example,10.0.0.1,[b.example]:22022 {KEY_TYPE} {KEY}",
            [("a.example", 22), ("10.0.0.1", 22), ("b.example", 22022)],
        ),
        (f"|1|c2FsdA==|aGFzaA== {KEY_TYPE} {KEY}", []),
        (f"@cert-authority *.example.org {KEY_TYPE} {KEY}", []),
        (f"@revoked example.org {KEY_TYPE} {KEY}", []),
        (f"*.example.org {KEY_TYPE} {KEY}", []),
        (f"!bad.example,good.example {KEY_TYPE} {KEY}", [("good.example", 22)]),
        (f"# example.org {KEY_TYPE} {KEY}", []),
        ("", []),
        ("example.org ssh-ed25519", []),
        (f"example.org ssh-rsa {KEY}", []),  # the blob says ed25519
        ("example.org ssh-ed25519 not*base64", []),
        (f"[example.org]:0 {KEY_TYPE} {KEY}", []),
        (f"[example.org]:70000 {KEY_TYPE} {KEY}", []),
        (f"[example.org] {KEY_TYPE} {KEY}", []),
        (f"-oProxyCommand=x {KEY_TYPE} {KEY}", []),
    ],
)
def test_known_hosts_lines_are_parsed_robustly(line, expected):
    entries = hostkeys.parse_line(line)
    assert [(entry.host, entry.port) for entry in entries] == expected
    assert all((entry.key_type, entry.key) == (KEY_TYPE, KEY) for entry in entries)


@pytest.mark.parametrize(
    "key_type,key,problem",
    [
        (KEY_TYPE, KEY, None),
        ("ssh-rsa", KEY, "not 'ssh-rsa'"),
        (KEY_TYPE, KEY[:-8], "truncated or malformed"),
        (KEY_TYPE, KEY[:-3], "not valid base64"),
        (KEY_TYPE, "AAAAC3NzaC1lZDI1NTE5", "truncated or malformed"),
        (KEY_TYPE, "AAAA", "too short"),
        ("SSH ED25519", KEY, "not an ssh key type"),
    ],
)
def test_key_blobs_must_decode_and_carry_their_type(key_type, key, problem):
    found = hostkeys.key_problem(key_type, key)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize(
    "host,port,line", [("example.org", 22, "example.org"), ("127.0.0.1", 2222, "[127.0.0.1]:2222"), ("::1", 22, "::1")]
)
def test_entries_are_formatted_as_ssh_writes_them(host, port, line):
    entry = hostkeys.Entry(host, port, KEY_TYPE, KEY)
    assert hostkeys.format_entry(entry) == f"{line} {KEY_TYPE} {KEY}"
    assert hostkeys.parse_line(hostkeys.format_entry(entry)) == [entry]


def test_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    (tmp_path / "k.pub").write_text(f"{KEY_TYPE} {KEY}\n")
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True).stdout
    assert hostkeys.Entry("h", 22, KEY_TYPE, KEY).fingerprint == printed.split()[1]


@pytest.mark.parametrize(
    "remote_host,ssh_port,target",
    [
        ("user@Example.COM", None, ("example.com", 22)),
        ("a@b@host.example", 2222, ("host.example", 2222)),
        ("alias", None, ("alias", 22)),
    ],
)
def test_a_tunnels_server_is_the_host_after_the_last_at(remote_host, ssh_port, target):
    assert hostkeys.target_of(remote_host, ssh_port) == target


# --- the precondition ----------------------------------------------------------

CHANGED = {(1, "example.org", 22): "host key changed for example.org:22: ..."}


@pytest.mark.parametrize(
    "wanted,owner_id,target,expected",
    [
        (True, 1, ("example.org", 22), CHANGED[(1, "example.org", 22)]),
        (False, 1, ("example.org", 22), None),  # a stopped tunnel is just stopped
        (True, 2, ("example.org", 22), None),  # trust is per owner
        (True, 1, ("example.org", 2222), None),  # another server
        (True, 1, ("other.example", 22), None),
    ],
)
def test_precondition_blocks_only_the_owners_tunnels_to_a_changed_server(wanted, owner_id, target, expected):
    assert hostkeys.blocked(wanted, owner_id, target, CHANGED) == expected


def test_nothing_changed_blocks_nothing():
    assert hostkeys.blocked(True, 1, ("example.org", 22), {}) is None


SSH_SAYS = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
The fingerprint for the {kind} key sent by the remote host is
{fingerprint}.
Please contact your system administrator.
Host key for [{host}]:{port} has changed and you have requested strict checking.
Host key verification failed.
"""


def test_the_offered_fingerprint_is_read_from_ssh_output():
    text = SSH_SAYS.format(kind="ED25519", fingerprint="SHA256:abc+/9", host="h", port=1)
    assert hostkeys.offered_in(text) == ("ED25519", "SHA256:abc+/9")
    assert hostkeys.offered_in("Host key verification failed.\n") is None


# --- the owner's file ------------------------------------------------------------


def pin(owner, host="example.org", port=22, key_type=KEY_TYPE, key=KEY, **extra) -> KnownHost:
    return KnownHost.objects.create(
        owner=owner,
        host=host,
        port=port,
        key_type=key_type,
        key=key,
        fingerprint=sshkeys.fingerprint(f"{key_type} {key}"),
        **extra,
    )


def test_file_is_written_from_the_owners_rows_only(owner, other):
    pin(owner, "127.0.0.1", 2222)
    pin(other, "other.example")
    assert hostkeys.sync_owner(owner.pk)
    text = hostkeys.path_for(owner.pk).read_text()
    assert f"[127.0.0.1]:2222 {KEY_TYPE} {KEY}\n" in text
    assert "other.example" not in text
    assert oct(hostkeys.path_for(owner.pk).stat().st_mode & 0o777) == "0o600"


def test_file_is_written_only_when_its_content_changes(owner):
    pin(owner)
    assert hostkeys.sync_owner(owner.pk)
    inode = hostkeys.path_for(owner.pk).stat().st_ino
    assert not hostkeys.sync_owner(owner.pk)
    assert hostkeys.path_for(owner.pk).stat().st_ino == inode


def test_keys_ssh_appended_are_trusted_on_first_use_before_the_rewrite(owner):
    pin(owner)
    hostkeys.sync_owner(owner.pk)
    path = hostkeys.path_for(owner.pk)
    with open(path, "a") as handle:  # what ssh's accept-new does
        handle.write(f"[127.0.0.1]:2222 {OTHER_TYPE} {OTHER}\n")
    assert hostkeys.sync_owner(owner.pk)
    row = KnownHost.objects.get(owner=owner, host="127.0.0.1")
    assert (row.port, row.key, row.state, row.source) == (2222, OTHER, HostKeyState.TRUSTED, "tofu")
    assert row.fingerprint == sshkeys.fingerprint(f"{OTHER_TYPE} {OTHER}")
    text = path.read_text()
    assert text.index("[127.0.0.1]:2222") < text.index(hostkeys.END_MARKER)  # now one of ours


def test_a_file_from_before_the_marker_is_imported_whole(owner):
    path = hostkeys.path_for(owner.pk)
    path.parent.mkdir(parents=True)
    path.write_text(f"|1|c2FsdA==|aGFzaA== {KEY_TYPE} {KEY}\nold.example {KEY_TYPE} {KEY}\n")
    hostkeys.sync_owner(owner.pk)
    assert list(KnownHost.objects.values_list("host", flat=True)) == ["old.example"]


def test_a_deleted_row_leaves_the_file_and_is_not_harvested_back(owner):
    row = pin(owner)
    hostkeys.sync_owner(owner.pk)
    hostkeys.delete(row)
    hostkeys.sync_owner(owner.pk)
    assert not KnownHost.objects.exists()
    assert "example.org" not in hostkeys.path_for(owner.pk).read_text()


def test_the_database_wins_over_an_appended_line_for_a_pinned_key(owner):
    pin(owner)
    hostkeys.sync_owner(owner.pk)
    with open(hostkeys.path_for(owner.pk), "a") as handle:
        handle.write(f"example.org {KEY_TYPE} {new_key()[1]}\n")
    hostkeys.sync_owner(owner.pk)
    assert list(KnownHost.objects.values_list("key", flat=True)) == [KEY]
    assert hostkeys.path_for(owner.pk).read_text().count("example.org") == 1


def test_a_changed_row_keeps_pinning_its_old_key(owner):
    pin(owner, state=HostKeyState.CHANGED, offered_key=OTHER, offered_fingerprint="SHA256:x")
    hostkeys.sync_owner(owner.pk)
    text = hostkeys.path_for(owner.pk).read_text()
    assert f"example.org {KEY_TYPE} {KEY}" in text
    assert OTHER not in text


# --- a changed key ---------------------------------------------------------------


def test_a_change_is_recorded_with_the_offered_key_fetched_from_the_server(owner, sshd):
    row = pin(owner, sshd.host, sshd.port)  # a key the server does not have
    tunnel = make_tunnel(owner, remote_host=sshd.destination, ssh_port=sshd.port)
    server_key = sshd.host_key_pub.read_text().split()
    offered = sshkeys.fingerprint(" ".join(server_key))
    text = SSH_SAYS.format(kind="ED25519", fingerprint=offered, host=sshd.host, port=sshd.port)

    message = hostkeys.record_change(tunnel, text)

    row.refresh_from_db()
    assert (row.state, row.offered_fingerprint, row.offered_key) == (HostKeyState.CHANGED, offered, server_key[1])
    assert row.key == KEY  # still pinned
    assert message == (
        f"host key changed for {sshd.host}:{sshd.port}: the server now offers {KEY_TYPE} {offered}, "
        f"trusted is {row.fingerprint}; accept the new key in your known hosts "
        f"(POST /api/v1/known-hosts/{row.id}/accept/) or delete the entry"
    )
    assert hostkeys.changed_targets() == {(owner.pk, sshd.host, sshd.port): message}


def test_a_fetched_key_that_is_not_the_one_ssh_saw_is_not_kept(owner, sshd):
    row = pin(owner, sshd.host, sshd.port)
    tunnel = make_tunnel(owner, remote_host=sshd.destination, ssh_port=sshd.port)
    text = SSH_SAYS.format(kind="ED25519", fingerprint="SHA256:" + "A" * 43, host=sshd.host, port=sshd.port)

    message = hostkeys.record_change(tunnel, text)

    row.refresh_from_db()
    assert (row.state, row.offered_key) == (HostKeyState.CHANGED, "")
    assert "could not be fetched" in message
    with pytest.raises(hostkeys.CannotAccept, match="fetch failed; delete the entry to trust on next use instead"):
        hostkeys.accept(row)


def test_keyscan_refuses_a_host_that_could_be_an_option():
    assert hostkeys.keyscan("-oProxyCommand=x", 22, "ed25519") == (
        [],
        "refusing to scan '-oProxyCommand=x' for 'ed25519'",
    )
    assert hostkeys.keyscan("example.org", 22, "ed25519; rm") == (
        [],
        "refusing to scan 'example.org' for 'ed25519; rm'",
    )


def test_output_without_a_changed_key_records_nothing(owner):
    row = pin(owner)
    tunnel = make_tunnel(owner, remote_host="u@example.org")
    assert hostkeys.record_change(tunnel, "Host key verification failed.\n") is None
    row.refresh_from_db()
    assert row.state == HostKeyState.TRUSTED


# --- accept, delete ------------------------------------------------------------------


def failed_tunnel(owner, remote_host="u@example.org", **extra) -> Tunnel:
    tunnel = make_tunnel(owner, remote_host=remote_host, **extra)
    Tunnel.objects.filter(pk=tunnel.pk).update(
        consecutive_failures=4, backoff_until=timezone.now() + timedelta(hours=1)
    )
    return tunnel


def test_accept_trusts_the_offered_key_and_retries_the_owners_tunnels_to_that_server(owner, other):
    offered_fp = sshkeys.fingerprint(f"{OTHER_TYPE} {OTHER}")
    row = pin(owner, state=HostKeyState.CHANGED, offered_key=OTHER, offered_fingerprint=offered_fp)
    to_server = failed_tunnel(owner, "u@Example.org")
    elsewhere = failed_tunnel(owner, "u@example.org", ssh_port=2222)
    others = failed_tunnel(other)
    marker = services.marker_value()

    hostkeys.accept(row)

    row.refresh_from_db()
    assert (row.key, row.fingerprint, row.state, row.offered_key) == (OTHER, offered_fp, HostKeyState.TRUSTED, "")
    assert row.changed_at is not None
    assert services.marker_value() > marker
    for tunnel, released in ((to_server, True), (elsewhere, False), (others, False)):
        tunnel.refresh_from_db()
        assert (tunnel.backoff_until is None, tunnel.consecutive_failures == 0) == (released, released)


def test_accept_of_a_trusted_key_is_refused(owner):
    with pytest.raises(hostkeys.CannotAccept, match="nothing to accept"):
        hostkeys.accept(pin(owner))


def test_delete_forgets_the_key_and_retries(owner):
    tunnel = failed_tunnel(owner)
    hostkeys.delete(pin(owner))
    tunnel.refresh_from_db()
    assert (KnownHost.objects.count(), tunnel.consecutive_failures, tunnel.backoff_until) == (0, 0, None)


# --- pre-seeding -------------------------------------------------------------------


def test_keyscan_output_is_pinned(owner):
    text = (
        f"# 127.0.0.1:2222 SSH-2.0-OpenSSH_9.2p1\n[127.0.0.1]:2222 {KEY_TYPE} {KEY}\nexample.org {OTHER_TYPE} {OTHER}\n"
    )
    rows = hostkeys.create_from_keyscan(owner, text)
    assert [(row.host, row.port, row.source, row.state) for row in rows] == [
        ("127.0.0.1", 2222, "keyscan", "trusted"),
        ("example.org", 22, "keyscan", "trusted"),
    ]
    assert KnownHost.objects.filter(owner=owner).count() == 2


@pytest.mark.parametrize(
    "text,words",
    [
        ("", "line is required"),
        (None, "line is required"),
        (["x"], "line is required"),
        ("# only a comment\n", "line has no key"),
        (f"example.org {KEY_TYPE}", "expected ssh-keyscan output"),
        (f"example.org {KEY_TYPE} {KEY} comment", "expected ssh-keyscan output"),
        (f"@revoked example.org {KEY_TYPE} {KEY}", "expected ssh-keyscan output"),
        (f"|1|c2FsdA==|aGFzaA== {KEY_TYPE} {KEY}", "not a host name"),
        (f"a.example,b.example {KEY_TYPE} {KEY}", "not a host name"),
        (f"-oProxyCommand=x {KEY_TYPE} {KEY}", "not a host name"),
        (f"[example.org]:99999 {KEY_TYPE} {KEY}", "not a host name"),
        (f"example.org ssh-rsa {KEY}", "not 'ssh-rsa'"),
        (f"example.org {KEY_TYPE} {KEY[:21]}", "not valid base64"),
        ("x" * (hostkeys.MAX_PASTE_CHARS + 1), "too long"),
    ],
)
def test_anything_but_keyscan_output_is_refused(owner, text, words):
    with pytest.raises(InvalidInput) as caught:
        hostkeys.create_from_keyscan(owner, text)
    assert words in caught.value.message
    assert not KnownHost.objects.exists()


def test_a_key_type_already_known_for_that_server_is_a_conflict(owner):
    pin(owner, "example.org")
    with pytest.raises(hostkeys.DuplicateHostKey, match="already known"):
        hostkeys.create_from_keyscan(owner, f"other.example {OTHER_TYPE} {OTHER}\nexample.org {KEY_TYPE} {OTHER}\n")
    assert KnownHost.objects.count() == 1  # nothing of the paste was kept
    with pytest.raises(hostkeys.DuplicateHostKey, match="pasted twice"):
        hostkeys.create_from_keyscan(owner, f"b.example {KEY_TYPE} {KEY}\nb.example {KEY_TYPE} {OTHER}\n")


def test_another_owner_may_pin_the_same_server(owner, other):
    pin(owner, "example.org")
    assert len(hostkeys.create_from_keyscan(other, f"example.org {KEY_TYPE} {KEY}")) == 1


def test_the_worker_keeps_a_tunnel_to_a_changed_server_failed_and_never_starts_it(owner):
    from tests.worker_fixtures import make_key
    from tunnels.models import Desired, Status
    from tunnels.reconciler import Reconciler

    row = pin(owner, state=HostKeyState.CHANGED, offered_key=OTHER, offered_fingerprint="SHA256:new")
    tunnel = make_tunnel(owner, remote_host="u@example.org", ssh_key=str(make_key(owner).pk))
    Tunnel.objects.filter(pk=tunnel.pk).update(desired_state=Desired.RUNNING)
    services.bump_marker()

    reconciler = Reconciler("node-a")
    reconciler.reconcile_once()

    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.last_error, tunnel.pid) == (Status.FAILED, hostkeys.change_message(row), None)
    assert reconciler.tracked == {}
