"""tunnels.ssh.master: an interactive tunnel's ssh control master command, its runtime dir and its
control clients. No secret in argv or environment; user data never becomes an ssh option."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tunnels import prompts, ssh
from tunnels.models import Tunnel
from tunnels.ssh import askpass, master

pytestmark = pytest.mark.django_db


def tunnel_for(owner, **fields) -> Tunnel:
    values = {
        "name": "t",
        "remote_host": "alice@example.com",
        "remote_port": "127.0.0.1:80",
        "local_port": "18080",
        "interactive": True,
        "ssh_port": 2222,
    }
    values.update(fields)
    return Tunnel(owner=owner, **values)


def options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


def build(tunnel: Tunnel, **kw) -> ssh.Command:
    kw.setdefault("identity", ssh.Identity())
    kw.setdefault("known_hosts", "/data/known_hosts/user-1")
    kw.setdefault("ssh_config", "/data/ssh/empty_config")
    kw.setdefault("control", Path("/tmp/tunnelsite-0123456789abcdef/x.ctl"))
    kw.setdefault("askpass", Path("/data/run/askpass-0123"))
    kw.setdefault("broker", Path("/tmp/tunnelsite-0123456789abcdef/askpass-1.sock"))
    kw.setdefault("nonce", "n" * 32)
    kw.setdefault("address", "127.0.0.1")
    return ssh.build_master_command(tunnel, **kw)


def test_a_foreground_control_master_that_may_ask_once(owner):
    command = build(tunnel_for(owner))
    argv, opts = command.argv, options(command.argv)

    assert Path(argv[0]).name == "ssh" and "autossh" not in " ".join(argv)
    assert argv[1:5] == ["-M", "-S", "/tmp/tunnelsite-0123456789abcdef/x.ctl", "-N"]
    for option in (
        "ControlPersist=no",
        "BatchMode=no",
        "NumberOfPasswordPrompts=1",
        "PreferredAuthentications=keyboard-interactive,password",
        "ExitOnForwardFailure=yes",
        "StrictHostKeyChecking=accept-new",
        "IdentitiesOnly=yes",
        "HostName=127.0.0.1",
        "UserKnownHostsFile=/data/known_hosts/user-1",
        "GlobalKnownHostsFile=none",
    ):
        assert option in opts, option
    assert "BatchMode=yes" not in opts
    assert "HostKeyAlias=[example.com]:2222" in opts  # host keys filed under the name, as for key tunnels
    assert argv[argv.index("--") + 1 :] == ["alice@example.com"]
    assert argv[argv.index("--") - 2 :][:2] == ["-L", "127.0.0.1:18080:127.0.0.1:80"]


def test_a_tunnel_with_a_key_offers_it_first(owner):
    identity = ssh.Identity(agent="/run/ts/agent.sock", public_key="/data/ssh/pub/k1.pub", key_name="laptop")
    opts = options(build(tunnel_for(owner), identity=identity).argv)
    assert "PreferredAuthentications=publickey,keyboard-interactive,password" in opts
    assert "IdentityFile=/data/ssh/pub/k1.pub" in opts


def test_the_log_shows_no_path(owner):
    shown = build(tunnel_for(owner)).display
    assert "/tmp/" not in shown and "/data/" not in shown
    assert "-M -S <control> -N" in shown


def test_environment_names_the_helper_socket_and_nonce_and_nothing_secret(owner, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    monkeypatch.setenv("DISPLAY", ":0")
    tunnel = tunnel_for(owner)

    env = build(tunnel, node="n1").env

    assert env["SSH_ASKPASS"] == "/data/run/askpass-0123"
    assert env["SSH_ASKPASS_REQUIRE"] == "force"
    assert env[askpass.SOCKET_ENV] == "/tmp/tunnelsite-0123456789abcdef/askpass-1.sock"
    assert env[askpass.NONCE_ENV] == "n" * 32
    assert env[ssh.KIND_ENV] == master.MASTER and env[ssh.MARKER_ENV] == str(tunnel.uuid)
    for absent in ("DATABASE_URL", "SECRET_KEY", "SSH_AUTH_SOCK", "DISPLAY", "AUTOSSH_GATETIME"):
        assert absent not in env


def test_answers_given_with_a_start_reach_neither_argv_nor_environment(owner, settings):
    secret = "pw-Zq8!not-in-argv"
    tunnel = tunnel_for(owner)
    tunnel.save()
    prompts.preload(tunnel, [secret])

    command = master.master_command(
        tunnel, node="n1", agent=None, askpass=askpass.install(), broker=Path("/tmp/b.sock"), nonce="ab" * 16
    )

    assert secret not in " ".join(command.argv)
    assert not any(secret in value for value in command.env.values())
    assert "ab" * 16 not in " ".join(command.argv)  # the nonce is in the environment only


@pytest.mark.parametrize(
    "fields",
    [
        {"remote_host": "-oProxyCommand=touch /tmp/pwned"},
        {"remote_host": "alice@host -oProxyCommand=x"},
        {"remote_host": ""},
    ],
)
def test_user_values_that_could_become_options_are_refused(owner, fields):
    with pytest.raises(ssh.UnsafeCommand):
        build(tunnel_for(owner, **fields))


def test_the_name_never_reaches_ssh(owner):
    argv = build(tunnel_for(owner, name="-oProxyCommand=x")).argv
    assert not any("ProxyCommand" in arg for arg in argv)


def test_ssh_reads_the_options_as_meant(owner):
    """The real ssh's view of the command (ssh -G): our first values win."""
    argv = build(tunnel_for(owner), ssh_config=None).argv
    query = [arg for arg in argv if arg not in ("-M", "-N")]
    result = subprocess.run(
        ssh.config_query_command(query), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True
    )
    effective = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert effective["batchmode"] == "no"
    assert effective["numberofpasswordprompts"] == "1"
    assert effective["preferredauthentications"] == "keyboard-interactive,password"
    assert effective["controlpersist"] == "no"
    assert effective["controlpath"] == "/tmp/tunnelsite-0123456789abcdef/x.ctl"
    assert effective["hostname"] == "127.0.0.1" and effective["port"] == "2222"


def test_control_path_fits_a_unix_socket_and_lives_in_a_private_dir(owner, settings):
    tunnel = tunnel_for(owner)
    path = master.control_path(tunnel)
    assert len(str(path)) + master.SSH_TEMP_SUFFIX <= master.SUN_PATH_MAX
    assert path.parent == master.runtime_dir()
    master.ensure_private(path.parent)
    info = os.lstat(path.parent)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700


def test_a_long_path_is_refused(owner):
    with pytest.raises(ValueError, match="too long"):
        build(tunnel_for(owner), control=Path("/tmp/" + "x" * 100))


def test_private_dir_refuses_a_symlink_and_tightens_its_mode(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(master.RuntimeDirError):
        master.ensure_private(link)
    os.chmod(real, 0o755)  # noqa: S103 - loosened on purpose: ensure_private tightens it
    master.ensure_private(real)
    assert stat.S_IMODE(os.lstat(real).st_mode) == 0o700


def test_private_dir_refuses_another_users_dir(tmp_path):
    other = tmp_path / "theirs"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)  # nobody (the tests run as root)
    with pytest.raises(master.RuntimeDirError):
        master.ensure_private(other)


def test_control_clients_carry_no_user_value():
    argv = master.control_command(Path("/tmp/tunnelsite-0123456789abcdef/x.ctl"), "check")
    assert argv[1:] == [
        "-F", "none", "-o", "BatchMode=yes", "-S", "/tmp/tunnelsite-0123456789abcdef/x.ctl",
        "-O", "check", "--", "tunnelsite",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        master.control_command(Path("/tmp/x"), "forward")


def test_a_master_that_is_not_there_does_not_answer(tmp_path):
    assert master.control(tmp_path / "none.ctl", "check") is False
