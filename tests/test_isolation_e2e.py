"""End to end: every tunnel authenticates as its owner, and only as its owner.

A real sshd on loopback trusts one restricted line of user A's key; the real
worker runs real autossh with keys held in its real ssh-agent.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import client_for
from tests.procs import wait_for
from tests.sshd import running_sshd
from tests.test_worker_e2e import create, ssh_children
from tests.worker_fixtures import (
    attach_key,
    fetch,
    make_key,
    sshd_tunnel_data,
    start_target,
    wait_fetch,
    wait_status,
)
from tunnels import processes, services, ssh, sshkeys
from tunnels.agent import agent_processes, runtime_dir
from tunnels.models import SshKey, Tunnel

# On the real network policy: the users reach the loopback sshds through their own destination grants.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.real_network_policy]


@pytest.fixture(autouse=True)
def _loopback_destination_grants(owner, other):
    """Both users may reach SSH servers on loopback, as staff would grant it (staff need no grant)."""
    for user in (owner, other):
        user.ssh_destinations = "127.0.0.0/8"
        user.save(update_fields=["ssh_destinations"])


FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


@pytest.fixture
def a_server(tmp_path):
    """A fresh sshd of user A's; the test writes its authorized_keys."""
    with running_sshd(tmp_path / "sshd-a") as server:
        server.authorized_keys.write_text("")
        yield server


@pytest.fixture
def other_target():
    server = start_target()
    yield server
    server.shutdown()
    server.server_close()


def restricted_line(key: SshKey, port: int) -> str:
    return f'restrict,port-forwarding,permitopen="127.0.0.1:{port}" {key.public_key}'


def to(server, target, **overrides) -> dict:
    return sshd_tunnel_data(server, remote_port=f"127.0.0.1:{target.port}", **overrides)


def test_a_restricted_key_carries_only_what_its_line_permits(worker, owner, a_server, target_server, other_target):
    key = make_key(owner)
    a_server.authorized_keys.write_text(restricted_line(key, target_server.port) + "\n")

    allowed = wait_status(create(key, to(a_server, target_server)), "running", timeout=20)
    assert wait_fetch(int(allowed.local_port), target_server.greeting)

    refused = wait_status(create(key, to(a_server, other_target)), "running", timeout=20)
    assert fetch(int(refused.local_port)) == ""  # connected, but the server refuses the forward
    denied = f"to connect to host 127.0.0.1 port {other_target.port}, but the request was denied"
    wait_for(lambda: denied in a_server.log.read_text(), message="the sshd's refusal in its log")
    assert wait_fetch(int(allowed.local_port), target_server.greeting)


def test_another_users_tunnel_to_a_server_offers_only_its_own_key(
    worker, sshd, owner, owner_key, other, a_server, target_server
):
    # A's key is in the worker's agent (A's tunnel runs) and A's server trusts it: B must still not get in.
    a_tunnel = wait_status(create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), "running")
    a_server.authorized_keys.write_text(restricted_line(owner_key, target_server.port) + "\n")
    b_key = make_key(other, "bobs-key")

    b_tunnel = wait_status(create(b_key, to(a_server, target_server)), "failed", timeout=20)

    assert b_tunnel.last_error.startswith("permission denied (publickey)")
    offered = set(FINGERPRINT.findall(a_server.log.read_text()))
    server_key = sshkeys.fingerprint(Path(f"{sshd.client_key}.pub").read_text())
    assert offered == {b_key.fingerprint}, (offered, owner_key.fingerprint, server_key)
    assert wait_fetch(int(a_tunnel.local_port), target_server.greeting)


def _secrets(key: SshKey) -> list[str]:
    """The private key's text and every line of its base64 body (any one of them would leak it)."""
    text = sshkeys.private_key_of(key).decode()
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return [text, "".join(body), *body]


def _files(*roots: Path):
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_socket():
                yield path


def test_the_private_key_is_nowhere_but_in_the_agent(worker, sshd, owner_key, target_server, data_dir):
    tunnel = wait_status(create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), "running")
    secrets = _secrets(owner_key)
    runtime = runtime_dir(data_dir, worker.node)
    assert runtime.is_dir() and agent_processes(data_dir, worker.node)

    for path in _files(data_dir, runtime, tunnel.log_path.parent):
        content = path.read_bytes().decode("utf-8", errors="replace")
        assert not any(secret in content for secret in secrets), f"private key material in {path}"
    for proc in psutil.process_iter(["pid"]):
        try:
            seen = " ".join(proc.cmdline()) + " " + " ".join(f"{k}={v}" for k, v in proc.environ().items())
        except (psutil.Error, OSError):
            continue
        assert not any(secret in seen for secret in secrets), f"private key material in process {proc.pid}"


def test_after_a_worker_crash_the_tunnel_is_adopted_and_the_agent_reused(
    worker, sshd, owner_key, target_server, data_dir
):
    tunnel = wait_status(create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), "running")
    (agent_pid,) = [proc.pid for proc in agent_processes(data_dir, worker.node)]

    pid = tunnel.pid

    worker.kill()
    worker.start()
    wait_for(lambda: "adopted tunnel" in worker.log_text(), message="adoption logged")

    tunnel.refresh_from_db()
    assert (tunnel.pid, tunnel.status) == (pid, "running") and wait_fetch(
        int(tunnel.local_port), target_server.greeting
    )
    assert [proc.pid for proc in agent_processes(data_dir, worker.node)] == [agent_pid]
    # autossh brings a killed ssh back: it authenticates again through the same agent.
    (child,) = wait_for(lambda: ssh_children(tunnel.pid), message="ssh child")
    authenticated = tunnel.log_path.read_text().count("Authenticated to")
    os.kill(child, signal.SIGKILL)
    wait_for(
        lambda: tunnel.log_path.read_text().count("Authenticated to") > authenticated,
        timeout=20,
        message="the new ssh authenticated",
    )
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    assert Tunnel.objects.get(pk=tunnel.pk).pid == tunnel.pid
    assert [proc.pid for proc in agent_processes(data_dir, worker.node)] == [agent_pid]


def test_a_tunnel_without_a_key_fails_once_and_starts_when_a_key_is_attached(
    worker, sshd, owner, target_server, data_dir
):
    tunnel = services.create_tunnel(owner, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
    assert tunnel.ssh_key_id is None  # the owner has no key yet

    wait_status(tunnel, "failed")
    assert tunnel.last_error == "no SSH key: add one in your keys and attach it"
    for _ in range(3):  # several resyncs (TUNNELSITE_WORKER_RESYNC=1): no retry, no back-off
        time.sleep(1)
        tunnel.refresh_from_db()
        assert (tunnel.status, tunnel.pid, tunnel.restart_count, tunnel.consecutive_failures) == ("failed", None, 0, 0)
        assert tunnel.backoff_until is None
        assert str(tunnel.uuid) not in processes.Scanner(data_dir).scan()
    assert not tunnel.log_path.exists()

    key = make_key(owner)
    sshd.authorize(key.public_key)
    try:
        attach_key(tunnel, key)

        wait_status(tunnel, "running")
        assert wait_fetch(int(tunnel.local_port), target_server.greeting)
        assert SshKey.objects.get(pk=key.pk).last_used_at is not None
    finally:
        sshd.revoke(key.public_key)


def test_a_staff_tunnel_without_a_key_still_uses_the_server_key(worker, sshd, staff, target_server):
    tunnel = services.create_tunnel(staff, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))

    wait_status(tunnel, "running")
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    assert "-i <server key>" in tunnel.log_path.read_text()


def test_the_log_a_user_reads_names_no_server_path(worker, sshd, owner, owner_key, target_server, data_dir):
    # A host key that does not match: ssh's warning names the known_hosts file and its line.
    tunnel = create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
    wrong = make_key(owner, "not-a-host-key").public_key
    known_hosts = ssh.known_hosts_path(tunnel)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {wrong}\n")
    services.bump_marker()

    wait_status(tunnel, "failed", timeout=20)
    wait_for(lambda: "known_hosts" in tunnel.log_path.read_text(), message="ssh's host key warning")
    raw = tunnel.log_path.read_text()
    assert str(data_dir) in raw  # ssh's own words name the file: the readers below must not see it

    client = client_for(owner)
    api = client.get(f"/api/v1/tunnels/{tunnel.uuid}/logs/", {"lines": 500}).json()["log"]
    response = client.get(f"/api/v1/tunnels/{tunnel.uuid}/logs/", {"download": 1})
    download = b"".join(response.streaming_content).decode()
    compat = client.get(f"/logs/{tunnel.hash[:8]}", {"lines": 500}).json()["log"]
    for text in (api, download, compat, tunnel.last_error):
        assert str(data_dir) not in text and "/ssh/pub/" not in text and f"user-{owner.pk}" not in text
    assert "<known_hosts>" in api and "<known_hosts>" in download and "<known_hosts>" in compat
    assert "IdentityFile=<key:office-laptop>" in api
