"""ssh.build_command: the one place ssh command lines are made."""

from __future__ import annotations

import pytest

from tests.worker_fixtures import make_key
from tunnels import ssh
from tunnels.models import Tunnel


def tunnel_for(owner, **fields) -> Tunnel:
    values = {"name": "t", "remote_host": "user@example.com", "remote_port": "80", "local_port": "18080"}
    values.update(fields)
    return Tunnel(owner=owner, **values)


def options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]


USER_KEY = ssh.Identity(agent="/run/ts/agent.sock", public_key="/data/ssh/pub/k1.pub", key_name="office-laptop")
SERVER_KEY = ssh.Identity(server_key="/keys/id")
AMBIENT = ssh.Identity(ambient_agent=True)


def build(tunnel, **kw):
    kw.setdefault("identity", USER_KEY)
    kw.setdefault("known_hosts", "/data/known_hosts/user-1")
    kw.setdefault("ssh_config", None)
    return ssh.build_command(tunnel, **kw)


def test_local_forward_command_ends_with_the_destination_after_double_dash(owner, settings):
    argv = build(tunnel_for(owner, ssh_port=2222)).argv

    assert argv[:4] == [settings.AUTOSSH_BIN, "-M", "0", "-N"]
    assert argv[-4:] == ["-L", "127.0.0.1:18080:localhost:80", "--", "user@example.com"]
    assert argv[argv.index("-p") + 1] == "2222"
    for option in ("ExitOnForwardFailure=yes", "BatchMode=yes", "StrictHostKeyChecking=accept-new"):
        assert option in options(argv)
    assert f"ServerAliveInterval={settings.SSH_SERVER_ALIVE_INTERVAL}" in options(argv)
    assert f"ConnectTimeout={settings.SSH_CONNECT_TIMEOUT}" in options(argv)


def test_remote_forward_and_host_forms(owner):
    argv = build(tunnel_for(owner, direction="local_to_remote", remote_port="0.0.0.0:9000", local_port="3000")).argv
    assert argv[-4:-2] == ["-R", "0.0.0.0:9000:127.0.0.1:3000"]

    argv = build(tunnel_for(owner, local_port="[::1]:8080", remote_port="db.internal:5432")).argv
    assert argv[-4:-2] == ["-L", "[::1]:8080:db.internal:5432"]


# identity -> (options that must be there, options that must not, -i value, SSH_AUTH_SOCK passed on)
IDENTITY_CASES = [
    (
        USER_KEY,
        ["IdentityAgent=/run/ts/agent.sock", "IdentityFile=/data/ssh/pub/k1.pub", "IdentitiesOnly=yes"],
        [],
        None,
        False,
    ),
    (SERVER_KEY, ["IdentitiesOnly=yes"], ["IdentityAgent=/run/ts/agent.sock"], "/keys/id", False),
    (AMBIENT, [], ["IdentitiesOnly=yes"], None, True),
]


@pytest.mark.parametrize("identity,present,absent,private_key,agent_env", IDENTITY_CASES)
def test_each_identity_becomes_its_options(owner, monkeypatch, identity, present, absent, private_key, agent_env):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/worker-agent.sock")

    command = build(tunnel_for(owner), identity=identity)

    opts = options(command.argv)
    assert set(present) <= set(opts) and not set(absent) & set(opts)
    assert "ForwardAgent=no" in opts and "HashKnownHosts=no" in opts  # always
    assert (command.argv[command.argv.index("-i") + 1] if "-i" in command.argv else None) == private_key
    assert ("SSH_AUTH_SOCK" in command.env) is agent_env
    assert len(command.display_argv) == len(command.argv)


def test_a_user_key_is_never_passed_as_a_private_key_file(owner):
    argv = build(tunnel_for(owner)).argv
    assert "-i" not in argv
    assert not any(arg.startswith("IdentityFile=") and not arg.endswith(".pub") for arg in options(argv))


def test_the_displayed_command_names_no_path(owner, settings):
    command = build(tunnel_for(owner), ssh_config="/data/ssh/empty_config")

    shown = command.display
    for path in ("/data", "/run/ts", "/keys"):
        assert path not in shown
    assert command.display_argv[0] == "autossh" and command.argv[0] == settings.AUTOSSH_BIN
    for placeholder in ("IdentityFile=<key:office-laptop>", "IdentityAgent=<agent>", "<ssh_config>", "<known_hosts>"):
        assert placeholder in shown
    assert command.display_argv[-4:] == command.argv[-4:]  # the forward and destination stay visible
    assert "<server key>" in build(tunnel_for(owner), identity=SERVER_KEY).display


def test_host_keys_are_remembered_per_owner_never_ignored(owner, other, data_dir, agent):
    a, b = make_key(owner), make_key(other)
    argv = ssh.command_for(tunnel_for(owner, ssh_key=a), agent=agent).argv
    other_argv = ssh.command_for(tunnel_for(other, ssh_key=b), agent=agent).argv

    assert f"UserKnownHostsFile={data_dir / 'known_hosts' / f'user-{owner.pk}'}" in options(argv)
    assert f"UserKnownHostsFile={data_dir / 'known_hosts' / f'user-{other.pk}'}" in options(other_argv)
    text = " ".join(argv)
    assert "StrictHostKeyChecking=no" not in text and "/dev/null" not in text
    # Only the owner's file decides (tunnels.hostkeys), in names the worker can read back.
    assert {"GlobalKnownHostsFile=none", "HashKnownHosts=no"} <= set(options(argv))


def test_non_staff_use_their_key_through_the_agent_and_an_empty_config(owner, settings, monkeypatch, agent):
    settings.SSH_CONFIG = "/etc/tunnelsite/ssh_config"
    settings.SSH_IDENTITY = "/srv/keys/server_key"
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    key = make_key(owner)

    command = ssh.command_for(tunnel_for(owner, ssh_key=key), agent=agent)

    argv, opts = command.argv, options(command.argv)
    config = argv[argv.index("-F") + 1]
    assert config == str(ssh.empty_config_path()) and "Deliberately empty" in open(config).read()
    assert f"IdentityAgent={agent.socket}" in opts and "IdentitiesOnly=yes" in opts
    pub = next(o for o in opts if o.startswith("IdentityFile=")).partition("=")[2]
    assert open(pub).read().strip() == key.public_key
    assert "/srv/keys/server_key" not in argv and "-i" not in argv
    assert "SSH_AUTH_SOCK" not in command.env
    assert key.fingerprint in agent.held()


def test_non_staff_without_a_key_never_get_the_server_key(owner, settings):
    settings.SSH_IDENTITY = "/srv/keys/server_key"
    with pytest.raises(ssh.NoKey, match="no SSH key: add one in your keys and attach it"):
        ssh.command_for(tunnel_for(owner))


def test_staff_with_a_key_use_it_not_the_server_key(staff, settings, agent):
    settings.SSH_IDENTITY = "/srv/keys/server_key"
    argv = ssh.command_for(tunnel_for(staff, ssh_key=make_key(staff)), agent=agent).argv
    assert "-i" not in argv and f"IdentityAgent={agent.socket}" in options(argv)


def test_staff_without_a_key_use_the_server_key(staff, settings):
    settings.SSH_IDENTITY = "/srv/keys/tunnel_key"
    argv = ssh.command_for(tunnel_for(staff)).argv
    assert argv[argv.index("-i") + 1] == "/srv/keys/tunnel_key" and "IdentitiesOnly=yes" in options(argv)


def test_staff_may_use_the_system_ssh_config_and_agent(staff, settings, monkeypatch):
    settings.SSH_CONFIG = "/etc/tunnelsite/ssh_config"
    settings.SSH_IDENTITY = ""
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")

    command = ssh.command_for(tunnel_for(staff))

    assert command.argv[command.argv.index("-F") + 1] == "/etc/tunnelsite/ssh_config"
    assert "-i" not in command.argv and "IdentitiesOnly=yes" not in options(command.argv)
    assert command.env["SSH_AUTH_SOCK"] == "/tmp/agent.sock"


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
    argv = build(tunnel_for(owner, name="-oProxyCommand=x")).argv

    assert argv[argv.index("--") + 1 :] == ["user@example.com"]
    assert not any("ProxyCommand" in arg for arg in argv)  # the name never reaches ssh


def test_environment_marks_the_process_and_carries_no_secrets(owner, settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    tunnel = tunnel_for(owner, auto_restart=False)

    env = build(tunnel, node="n1").env

    assert env["TUNNELSITE_TUNNEL"] == str(tunnel.uuid)
    assert env["TUNNELSITE_DATA_DIR"] == str(settings.DATA_DIR)
    assert env["TUNNELSITE_TUNNEL_NODE"] == "n1"
    assert env["AUTOSSH_POLL"] == str(settings.AUTOSSH_POLL)
    # An ssh that fails while connecting ends autossh: the worker counts every try (no hidden retries).
    assert env["AUTOSSH_GATETIME"] == str(settings.SSH_CONNECT_TIMEOUT + 5)
    assert env["AUTOSSH_MAXSTART"] == "1"  # no restarts by autossh either when auto_restart is off
    assert "DATABASE_URL" not in env and "SECRET_KEY" not in env


def test_auto_restart_leaves_autossh_unlimited(owner):
    assert "AUTOSSH_MAXSTART" not in build(tunnel_for(owner)).env


@pytest.mark.parametrize(
    "line,expected",
    [
        (
            "Server accepts key: {data}/ssh/pub/0f3a.pub ED25519 SHA256:abc explicit agent",
            "Server accepts key: <key> ED25519 SHA256:abc explicit agent",
        ),
        ("Will attempt key: {data}/ssh/pub/0f3a.pub ED25519", "Will attempt key: <key> ED25519"),
        ("Add correct host key in {data}/known_hosts/user-7 to get", "Add correct host key in <known_hosts> to get"),
        ("Offending ED25519 key in {data}/known_hosts/user-7:3", "Offending ED25519 key in <known_hosts>:3"),
        ("load_hostkeys: fopen {data}/ssh/empty_config: x", "load_hostkeys: fopen <ssh_config>: x"),
        ("{data}/logs/tunnel-x.log", "<data>"),
        ("connect to agent /tmp/tunnelsite-0123456789abcdef/agent.sock failed", "connect to agent <agent> failed"),
        ("identity file /srv/keys/server_key type 3", "identity file <server key> type 3"),
        ("Authenticated to 127.0.0.1 ([127.0.0.1]:22) using publickey.", None),
    ],
)
def test_redact_replaces_the_servers_paths_with_placeholders(settings, data_dir, line, expected):
    settings.SSH_IDENTITY = "/srv/keys/server_key"
    text = line.format(data=data_dir)
    assert ssh.redact(text) == (text if expected is None else expected)


def test_only_staff_read_logs_unredacted(owner, staff, data_dir):
    text = f"Server accepts key: {data_dir}/ssh/pub/k.pub"
    assert ssh.redact_for(staff, text) == text
    assert ssh.redact_for(owner, text) == "Server accepts key: <key>"


@pytest.mark.parametrize(
    ("remote_host", "ssh_port", "address", "alias"),
    [
        ("user@Example.COM", None, "203.0.113.7", "example.com"),
        ("user@example.com", 22, "2001:db8::7", "example.com"),
        ("user@example.com", 2222, "203.0.113.7", "[example.com]:2222"),
        ("me@127.0.0.1", 2222, "127.0.0.1", "[127.0.0.1]:2222"),
    ],
)
def test_a_checked_address_is_pinned_and_the_host_key_stays_under_the_name(
    owner, remote_host, ssh_port, address, alias
):
    # ssh appends no port to a HostKeyAlias: it is written as known_hosts files a non-default port.
    argv = build(tunnel_for(owner, remote_host=remote_host, ssh_port=ssh_port), address=address).argv
    assert f"HostName={address}" in options(argv) and f"HostKeyAlias={alias}" in options(argv)
    assert argv[-2:] == ["--", remote_host]


def test_without_an_address_ssh_resolves_the_name_itself(owner):
    argv = build(tunnel_for(owner)).argv
    assert not [option for option in options(argv) if option.startswith(("HostName=", "HostKeyAlias="))]


@pytest.mark.parametrize("address", ["example.com", "-oProxyCommand=x", "127.0.0.1 -v", ""])
def test_only_an_address_can_be_pinned(owner, address):
    with pytest.raises(ValueError):
        build(tunnel_for(owner), address=address)
