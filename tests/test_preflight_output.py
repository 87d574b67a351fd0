"""Reading ssh's output into connection-test steps (pure), and the preflight command line."""

from __future__ import annotations

import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.factories import tunnel_data
from tunnels import preflight_runner, services, ssh
from tunnels.preflight_runner import read_ssh_output, redact

FORWARD = "127.0.0.1:4000"

# Real lines of OpenSSH 9.2 at LogLevel=DEBUG2 (trimmed to the ones that matter, in order).
ADDED = "Warning: Permanently added '[127.0.0.1]:39299' (ED25519) to the list of known hosts."
KNOWN = "debug1: Host '[127.0.0.1]:42813' is known and matches the ED25519 host key."
SERVER_KEY = "debug1: Server host key: ssh-ed25519 SHA256:WdDkpiZmSj8FEQ3Fdl+lFaZ41ewjOTmKHkMRNvuR/Bw"
AUTHENTICATED = 'Authenticated to 127.0.0.1 ([127.0.0.1]:39299) using "publickey".'
REMOTE_OK = "debug1: remote forward success for: listen localhost:58735, connect 127.0.0.1:80"
REMOTE_FAILED = [
    "debug1: remote forward failure for: listen 127.0.0.1:59741, connect 127.0.0.1:80",
    "Error: remote port forwarding failed for listen port 59741",
]
STDIO_OK = "debug2: channel 0: open confirm rwindow 2097152 rmax 32768"
DENIED = [
    "debug1: Offering public key: /srv/data/keys/k1 ED25519 SHA256:RsHNST44DvQomZW4Ay2mqBbrFUDaahaIq5QZszarDY0",
    "debug1: No more authentication methods to try.",
    "root@127.0.0.1: Permission denied (publickey).",
]
CHANGED = [
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
    "Add correct host key in /srv/data/known_hosts/user-3 to get rid of this message.",
    "Host key verification failed.",
]

CASES = [
    # (name, lines, stdio, expected [(step, ok)], words in the last detail)
    (
        "remote forward ok",
        [SERVER_KEY, ADDED, AUTHENTICATED, REMOTE_OK],
        False,
        [("host_key", True), ("auth", True), ("forward", True)],
        "listens on",
    ),
    (
        "remote forward refused",
        [SERVER_KEY, KNOWN, AUTHENTICATED, *REMOTE_FAILED],
        False,
        [("host_key", True), ("auth", True), ("forward", False)],
        "remote port forwarding failed",
    ),
    (
        "spare port allocated",
        [KNOWN, AUTHENTICATED, "Allocated port 40123 for remote forward to 127.0.0.1:80"],
        False,
        [("host_key", True), ("auth", True), ("forward", True)],
        "listens on",
    ),
    (
        "stdio open confirm",
        [KNOWN, AUTHENTICATED, "debug1: channel_connect_stdio_fwd: localhost:80", STDIO_OK],
        True,
        [("host_key", True), ("auth", True), ("forward", True)],
        "opened a connection",
    ),
    (
        "stdio connect failed",
        [KNOWN, AUTHENTICATED, "channel 0: open failed: connect failed: Connection refused", "stdio forwarding failed"],
        True,
        [("host_key", True), ("auth", True), ("forward", False)],
        "connect failed: Connection refused",
    ),
    (
        "stdio prohibited",
        [KNOWN, AUTHENTICATED, "channel 0: open failed: administratively prohibited: open failed"],
        True,
        [("host_key", True), ("auth", True), ("forward", False)],
        "administratively prohibited",
    ),
    ("wrong key", [SERVER_KEY, KNOWN, *DENIED], False, [("host_key", True), ("auth", False)], "permission denied"),
    ("host key changed", [SERVER_KEY, *CHANGED], False, [("host_key", False)], "host key verification failed"),
    (
        "host key unknown under strict checking",
        [
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.",
            "Host key verification failed.",
        ],
        False,
        [("host_key", False)],
        "No ED25519 host key is known",
    ),
    (
        "too many keys offered",
        [KNOWN, "Received disconnect from 127.0.0.1 port 22:2: Too many authentication failures"],
        False,
        [("host_key", True), ("auth", False)],
        "permission denied",
    ),
]


@pytest.mark.parametrize(("lines", "stdio", "expected", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_output_maps_to_steps(lines, stdio, expected, words):
    records = read_ssh_output("\n".join(lines), stdio=stdio, forward=FORWARD)

    assert [(r["step"], r["ok"]) for r in records] == expected
    assert words.lower() in records[-1]["detail"].lower()
    assert all("/srv/data" not in r["detail"] for r in records)


def test_output_without_an_outcome_yet_is_undecided():
    assert read_ssh_output("\n".join([SERVER_KEY, KNOWN, AUTHENTICATED]), stdio=False, forward=FORWARD) is None
    assert read_ssh_output("", stdio=True, forward=FORWARD) is None


@pytest.mark.parametrize(
    ("lines", "ended", "expected", "words"),
    [
        (
            ["Connection to 127.0.0.1 port 44095 timed out"],
            "exited",
            [("host_key", False)],
            "no SSH handshake",
        ),
        (
            ["kex_exchange_identification: read: Connection reset by peer"],
            "exited",
            [("host_key", False)],
            "ssh exited: kex_exchange_identification",
        ),
        (
            [KNOWN, "Connection closed by 127.0.0.1 port 22"],
            "exited",
            [("host_key", True), ("auth", False)],
            "Connection closed",
        ),
        (
            [KNOWN, AUTHENTICATED, "debug1: channel_connect_stdio_fwd: localhost:80"],
            "deadline",
            [("host_key", True), ("auth", True), ("forward", False)],
            "no answer within",
        ),
        ([], "exited", [("host_key", False)], "without saying why"),
    ],
)
def test_undecided_output_fails_the_first_step_not_passed_when_ssh_is_gone(lines, ended, expected, words):
    records = read_ssh_output("\n".join(lines), stdio=True, forward=FORWARD, ended=ended)

    assert [(r["step"], r["ok"]) for r in records] == expected
    assert words in records[-1]["detail"]


def test_first_connection_says_the_host_key_was_remembered():
    records = read_ssh_output("\n".join([SERVER_KEY, ADDED, AUTHENTICATED, REMOTE_OK]), stdio=False, forward=FORWARD)

    assert records[0]["detail"].startswith("first connection: remembered ssh-ed25519 SHA256:WdDkpiZm")


def test_redact_hides_server_paths(settings):
    line = f'Load key "{settings.DATA_DIR}/ssh/pub/7.pub": invalid format'

    assert str(settings.DATA_DIR) not in redact(line)
    assert redact("x" * 1000) == "x" * 300


# --- the command line -----------------------------------------------------


def test_preflight_command_is_plain_ssh_with_the_tunnels_options_and_our_options_first(staff, settings):
    settings.SSH_IDENTITY = "/keys/id"
    tunnel = services.create_tunnel(staff, tunnel_data(ssh_port=2222), start=False)
    autossh = ssh.command_for(tunnel)

    command = ssh.preflight_command(tunnel)

    assert command.argv[0] == "ssh" and "-M" not in command.argv
    ours = ["-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=5"]
    assert command.argv[1:10] == [*ours, "-o", "LogLevel=DEBUG2"]
    # Everything the tunnel itself uses follows (identity, known_hosts, config, forward, destination).
    assert command.argv[10:] == autossh.argv[4:]
    assert command.display_argv[10:] == autossh.display_argv[4:]
    assert "/keys/id" not in command.display
    assert not {ssh.MARKER_ENV, ssh.DATA_DIR_ENV, ssh.NODE_ENV, ssh.GENERATION_ENV} & set(command.env)
    assert not any(key.startswith("AUTOSSH_") for key in command.env)


def test_preflight_of_a_keyless_user_tunnel_raises_no_key(owner):
    tunnel = services.create_tunnel(owner, tunnel_data(), start=False)

    with pytest.raises(ssh.NoKey):
        ssh.preflight_command(tunnel)


def test_stdio_preflight_replaces_the_local_forward_with_w(staff):
    tunnel = services.create_tunnel(staff, tunnel_data(remote_port="db.internal:5432"), start=False)

    command = ssh.preflight_command(tunnel, stdio=True)

    assert "-L" not in command.argv
    assert command.argv[-4:] == ["-W", "db.internal:5432", "--", "user@example.com"]
    assert command.display_argv[-4:] == command.argv[-4:]


def test_spare_port_preflight_asks_for_port_0_on_the_remote_side(staff):
    data = tunnel_data(direction="local_to_remote", remote_port="127.0.0.1:9000", local_port="8080")
    tunnel = services.create_tunnel(staff, data, start=False)

    command = ssh.preflight_command(tunnel, spare_remote_port=True)

    assert command.argv[-4:] == ["-R", "127.0.0.1:0:127.0.0.1:8080", "--", "user@example.com"]


def _spawn_in_test_thread(initializer, argv: list[str]) -> subprocess.CompletedProcess:
    with ThreadPoolExecutor(max_workers=1, initializer=initializer) as pool:
        return pool.submit(subprocess.run, argv, capture_output=True, text=True, start_new_session=True).result()


def test_a_test_threads_children_outlive_a_group_sigterm_meant_for_the_worker():
    """A worker shutdown SIGTERMs its process group; a test's ssh spawned at that moment must not die
    of it (the runner ends its children with SIGKILL). The child signals itself, as the group would."""
    argv = ["sh", "-c", "kill -TERM $$; kill -HUP $$; echo alive"]

    deaf = _spawn_in_test_thread(preflight_runner._deaf_to_group_signals, argv)
    plain = _spawn_in_test_thread(None, argv)

    assert (deaf.returncode, deaf.stdout.strip()) == (0, "alive")
    assert plain.returncode == -signal.SIGTERM  # the control: without the mask the signal kills
