"""Issue 11: a running tunnel's log stays bounded, and reading a log reads only its end.

The growth case runs a real -R tunnel through a real sshd to a closed port:
ssh logs every refused connection, and the test drives connections at the
tunnel's listener on the server side.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.factories import make_tunnel
from tests.procs import free_port, wait_for
from tests.worker_fixtures import sshd_tunnel_data, wait_status
from tunnels import logfiles, services

HUGE = 8 * 1024**3  # a sparse file: reading it whole would take minutes and 8 GiB


def huge_log(tunnel, last_lines: int = 1000) -> None:
    path = tunnel.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(HUGE)
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(b"line %d\r\n" % n for n in range(last_lines)))


@pytest.mark.django_db
def test_rest_tail_of_a_huge_log_reads_only_its_end(owner, owner_client, other_client):
    tunnel = make_tunnel(owner)
    huge_log(tunnel)

    response = owner_client.get(f"/api/v1/tunnels/{tunnel.uuid}/logs/", {"lines": 2})

    assert response.status_code == 200
    body = response.json()
    assert body["log"] == "line 998\r\nline 999\r\n" and body["lines"] == 2
    assert body["size"] == tunnel.log_path.stat().st_size
    assert other_client.get(f"/api/v1/tunnels/{tunnel.uuid}/logs/").status_code == 404


@pytest.mark.django_db
def test_rest_download_of_a_huge_log_is_its_newest_bytes(owner, owner_client, settings):
    settings.LOG_MAX_BYTES = 4096
    tunnel = make_tunnel(owner)
    huge_log(tunnel)

    response = owner_client.get(f"/api/v1/tunnels/{tunnel.uuid}/logs/", {"download": "1"})

    text = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and len(text) <= 4096
    assert text.startswith("line ") and text.endswith("line 999\r\n")  # whole lines, the newest


@pytest.mark.django_db
@pytest.mark.parametrize("mount", ["", "/api/autossh"])
def test_compat_tail_of_a_huge_log_reads_only_its_end(mount, owner, owner_client):
    tunnel = make_tunnel(owner)
    huge_log(tunnel)

    response = owner_client.get(f"{mount}/logs/{tunnel.hash[:8]}", {"lines": 3})

    assert response.status_code == 200
    assert response.json()["log"] == "line 997\nline 998\nline 999\n"


# --- a running tunnel's log ---------------------------------------------------

CAP = 8192  # two 4 KiB files: the worker must drop rotations to keep it


def user_log_bytes(owner) -> int:
    paths = [t.log_path for t in owner.tunnels.all()]
    return sum(f.stat().st_size for p in paths for f in p.parent.glob(p.name + "*"))


def refused_connections(port: int, count: int) -> int:
    """Connect ``count`` times to the tunnel's listener on the server; returns how many were accepted."""
    accepted = 0
    for _ in range(count):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                accepted += 1
                sock.recv(1)  # ssh closes it once the target refuses
        except OSError:
            pass
    return accepted


@pytest.mark.timeout(180)
def test_a_running_tunnels_log_stays_under_the_user_cap(worker_factory, sshd, owner_key):
    worker = worker_factory(
        extra_env={
            "TUNNELSITE_LOG_MAX_BYTES": "4096",
            "TUNNELSITE_LOG_KEEP": "2",
            "TUNNELSITE_USER_LOG_MAX_BYTES": str(CAP),
        }
    )
    remote_port, closed = free_port(), free_port()  # nothing listens on ``closed``
    data = sshd_tunnel_data(sshd, direction="local_to_remote", local_port=str(closed), remote_port=str(remote_port))
    tunnel = services.create_tunnel(owner_key.owner, {**data, "ssh_key": str(owner_key.pk)})
    wait_status(tunnel, "running", timeout=20)

    accepted = 0
    for _ in range(6):  # bursts several resyncs (1 s in tests) apart
        accepted += refused_connections(remote_port, 200)
        wait_for(lambda: user_log_bytes(owner_key.owner) <= CAP, timeout=10, message="the user's logs under the cap")

    line = f"connect_to 127.0.0.1 port {closed}: failed."
    assert line in logfiles.tail_lines(tunnel.log_path, 5) + logfiles.tail_lines(
        logfiles.rotation(tunnel.log_path, 1), 5
    )
    assert accepted * len(line) > 4 * CAP  # ssh wrote far more than the cap, one line per refused connection
    assert not logfiles.rotation(tunnel.log_path, 3).exists()
    tunnel.refresh_from_db()
    assert tunnel.status == "running", worker.log_text()[-2000:]
