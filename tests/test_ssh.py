"""ssh.build_command: the one place ssh command lines are made."""

from __future__ import annotations

import pytest

from tunnels import ssh
from tunnels.models import Tunnel


def tunnel_for(owner, **fields) -> Tunnel:
    values = {"name": "t", "remote_host": "user@example.com", "remote_port": "80", "local_port": "18080"}
    values.update(fields)
    return Tunnel(owner=owner, **values)


def options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


def build(tunnel, **kw):
    kw.setdefault("identity", "/keys/id")
    kw.setdefault("known_hosts", "/data/known_hosts/user-1")
    kw.setdefault("ssh_config", None)
    return ssh.build_command(tunnel, **kw)


def test_local_forward_command_ends_with_the_destination_after_double_dash(owner, settings):
    argv, env = build(tunnel_for(owner, ssh_port=2222))

    assert argv[:4] == [settings.AUTOSSH_BIN, "-M", "0", "-N"]
    assert argv[-4:] == ["-L", "127.0.0.1:18080:localhost:80", "--", "user@example.com"]
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == "/keys/id"
    for option in ("ExitOnForwardFailure=yes", "BatchMode=yes", "StrictHostKeyChecking=accept-new"):
        assert option in options(argv)
    assert f"ServerAliveInterval={settings.SSH_SERVER_ALIVE_INTERVAL}" in options(argv)
    assert f"ConnectTimeout={settings.SSH_CONNECT_TIMEOUT}" in options(argv)


def test_remote_forward_and_host_forms(owner):
    argv, _ = build(tunnel_for(owner, direction="local_to_remote", remote_port="0.0.0.0:9000", local_port="3000"))
    assert argv[-4:-2] == ["-R", "0.0.0.0:9000:127.0.0.1:3000"]

    argv, _ = build(tunnel_for(owner, local_port="[::1]:8080", remote_port="db.internal:5432"))
    assert argv[-4:-2] == ["-L", "[::1]:8080:db.internal:5432"]


def test_host_keys_are_remembered_per_owner_never_ignored(owner, other, data_dir):
    argv, _ = ssh.command_for(tunnel_for(owner))
    other_argv, _ = ssh.command_for(tunnel_for(other))

    assert f"UserKnownHostsFile={data_dir / 'known_hosts' / f'user-{owner.pk}'}" in options(argv)
    assert f"UserKnownHostsFile={data_dir / 'known_hosts' / f'user-{other.pk}'}" in options(other_argv)
    text = " ".join(argv)
    assert "StrictHostKeyChecking=no" not in text and "/dev/null" not in text


def test_non_staff_get_an_empty_config_and_only_the_configured_identity(owner, settings, monkeypatch):
    settings.SSH_CONFIG = "/etc/tunnelsite/ssh_config"
    settings.SSH_IDENTITY = ""
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")

    argv, env = ssh.command_for(tunnel_for(owner))

    config = argv[argv.index("-F") + 1]
    assert config == str(ssh.empty_config_path()) and "Deliberately empty" in open(config).read()
    assert "IdentitiesOnly=yes" in options(argv)
    identity = argv[argv.index("-i") + 1]  # a path that does not exist: ssh's default ~/.ssh keys are not tried
    assert identity.startswith(str(settings.DATA_DIR)) and not ssh.ssh_dir().joinpath("no-identity").exists()
    assert "SSH_AUTH_SOCK" not in env


def test_staff_may_use_the_system_ssh_config_and_agent(staff, settings, monkeypatch):
    settings.SSH_CONFIG = "/etc/tunnelsite/ssh_config"
    settings.SSH_IDENTITY = ""
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")

    argv, env = ssh.command_for(tunnel_for(staff))

    assert argv[argv.index("-F") + 1] == "/etc/tunnelsite/ssh_config"
    assert "-i" not in argv and "IdentitiesOnly=yes" not in options(argv)
    assert env["SSH_AUTH_SOCK"] == "/tmp/agent.sock"


def test_configured_identity_is_used_for_everyone(owner, settings):
    settings.SSH_IDENTITY = "/srv/keys/tunnel_key"
    argv, _ = ssh.command_for(tunnel_for(owner))
    assert argv[argv.index("-i") + 1] == "/srv/keys/tunnel_key"


@pytest.mark.parametrize(
    "field,value",
    [
        ("remote_host", "-oProxyCommand=touch /tmp/pwned"),
        ("remote_host", "user@host -oProxyCommand=x"),
        ("remote_host", ""),
    ],
)
def test_values_that_could_become_options_are_refused_even_without_validation(owner, field, value):
    with pytest.raises(ssh.UnsafeCommand):
        build(tunnel_for(owner, **{field: value}))


def test_only_the_destination_follows_double_dash_and_no_user_value_is_an_option(owner):
    argv, _ = build(tunnel_for(owner, name="-oProxyCommand=x"))

    assert argv[argv.index("--") + 1 :] == ["user@example.com"]
    assert not any("ProxyCommand" in arg for arg in argv)  # the name never reaches ssh


def test_environment_marks_the_process_and_carries_no_secrets(owner, settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    tunnel = tunnel_for(owner, auto_restart=False)

    _, env = build(tunnel, node="n1")

    assert env["TUNNELSITE_TUNNEL"] == str(tunnel.uuid)
    assert env["TUNNELSITE_DATA_DIR"] == str(settings.DATA_DIR)
    assert env["TUNNELSITE_TUNNEL_NODE"] == "n1"
    assert env["AUTOSSH_GATETIME"] == "0" and env["AUTOSSH_POLL"] == str(settings.AUTOSSH_POLL)
    assert env["AUTOSSH_MAXSTART"] == "1"  # no restarts by autossh either when auto_restart is off
    assert "DATABASE_URL" not in env and "SECRET_KEY" not in env


def test_auto_restart_leaves_autossh_unlimited(owner):
    _, env = build(tunnel_for(owner))
    assert "AUTOSSH_MAXSTART" not in env
