"""The authorized_keys line against a real sshd: the permitted forwards work, others are refused.

A private sshd per module (its authorized_keys is rewritten per test; the shared
session sshd is left alone). The key is written to a 0600 temp file here, in the
test only, and used by a plain ``ssh -N``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import sshd as sshd_mod
from tests.factories import make_tunnel
from tests.procs import free_port, kill_group, port_open, spawn, wait_for
from tests.worker_fixtures import fetch, wait_fetch
from tunnels import sshkeys
from tunnels.services_keys import authorized_keys_line, generate_key

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def own_sshd(tmp_path_factory):
    with sshd_mod.running_sshd(tmp_path_factory.mktemp("keys-sshd")) as server:
        yield server


@pytest.fixture
def install(own_sshd, tmp_path):
    """Put ``line`` in the sshd's authorized_keys and return the key's private file (0600)."""

    def put(key, line: str) -> Path:
        authorized = Path(own_sshd.client_key).parent / "authorized_keys"
        authorized.write_text(line + "\n")
        path = tmp_path / f"id-{key.name}-{len(list(tmp_path.glob('id-*')))}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(sshkeys.private_key_of(key))
        return path

    return put


@pytest.fixture
def ssh_runner(own_sshd, tmp_path):
    """Start ``ssh -N`` with a forward; every process started is killed at teardown."""
    started: list[subprocess.Popen] = []

    def run(identity: Path, flag: str, spec: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"ssh-{len(started)}.log"
        argv = [
            *("ssh", "-N", "-v", "-i", str(identity), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"),
            *("-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}"),
            *("-o", "ExitOnForwardFailure=yes", "-F", "/dev/null", "-p", str(own_sshd.port)),
            *(flag, spec, "--", own_sshd.destination),
        ]
        proc = spawn(argv, log)
        started.append(proc)
        return proc, log

    yield run
    for proc in started:
        kill_group(proc)


def authenticated(log: Path) -> bool:
    return "Authenticated to" in log.read_text(errors="replace")


def test_a_permitted_L_forward_works_and_another_is_refused(owner, install, ssh_runner, target_server):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, remote_port=str(target_server.port), ssh_key=str(key.pk))
    line = authorized_keys_line(key)
    assert f'permitopen="localhost:{target_server.port}"' in line
    identity = install(key, line)

    allowed_port = free_port()
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{allowed_port}:localhost:{target_server.port}")
    wait_for(lambda: port_open(allowed_port) or proc.poll() is not None, message="the -L listener")
    wait_fetch(allowed_port, target_server.greeting)

    # Same target by another name: sshd compares permitopen hosts literally, so it is refused.
    refused_port = free_port()
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{refused_port}:127.0.0.1:{target_server.port}")
    wait_for(lambda: port_open(refused_port) or proc.poll() is not None, message="the second -L listener")
    assert fetch(refused_port) == ""
    wait_for(lambda: "administratively prohibited" in log.read_text(errors="replace"), message="the refusal")


def test_a_permitted_R_forward_works_and_another_is_refused(owner, install, ssh_runner, target_server):
    key = generate_key(owner, "laptop")
    listen = free_port()
    make_tunnel(owner, remote_port=str(listen), direction="local_to_remote", ssh_key=str(key.pk))
    line = authorized_keys_line(key)
    assert f'permitlisten="localhost:{listen}"' in line and 'permitopen="none.invalid:1"' in line
    identity = install(key, line)

    # As the worker's forward_spec builds it: -R localhost:<port>:<local target>.
    proc, log = ssh_runner(identity, "-R", f"localhost:{listen}:127.0.0.1:{target_server.port}")
    wait_for(lambda: port_open(listen) or proc.poll() is not None, message="the -R listener on the server")
    wait_fetch(listen, target_server.greeting)

    other = free_port()
    proc, log = ssh_runner(identity, "-R", f"localhost:{other}:127.0.0.1:{target_server.port}")
    assert proc.wait(timeout=15) != 0  # ExitOnForwardFailure: the listen was refused
    assert "remote port forwarding failed" in log.read_text(errors="replace")
    assert not port_open(other)
    # And the -L direction, which no tunnel of this key uses, is closed too.
    local = free_port()
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{local}:localhost:{target_server.port}")
    wait_for(lambda: port_open(local) or proc.poll() is not None, message="the -L listener")
    assert fetch(local) == ""
    wait_for(lambda: "administratively prohibited" in log.read_text(errors="replace"), message="the refusal")


def test_a_key_no_tunnel_uses_logs_in_but_forwards_nothing(owner, install, ssh_runner, target_server):
    key = generate_key(owner, "idle")
    line = authorized_keys_line(key)
    assert line.startswith("restrict ssh-ed25519 ")
    identity = install(key, line)
    port = free_port()
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{port}:localhost:{target_server.port}")
    wait_for(lambda: port_open(port) or proc.poll() is not None, message="the -L listener")
    assert fetch(port) == ""
    assert authenticated(log)


def test_from_is_enforced_by_sshd(owner, install, ssh_runner, target_server):
    key = generate_key(owner, "laptop")
    make_tunnel(owner, remote_port=str(target_server.port), ssh_key=str(key.pk))
    identity = install(key, authorized_keys_line(key, "10.0.0.0/8"))  # not where the test connects from
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{free_port()}:localhost:{target_server.port}")
    assert proc.wait(timeout=15) != 0
    assert not authenticated(log)
    identity = install(key, authorized_keys_line(key, "127.0.0.1"))
    port = free_port()
    proc, log = ssh_runner(identity, "-L", f"127.0.0.1:{port}:localhost:{target_server.port}")
    wait_for(lambda: port_open(port) or proc.poll() is not None, message="the -L listener")
    wait_fetch(port, target_server.greeting)
