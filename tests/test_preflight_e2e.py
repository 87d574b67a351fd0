"""Connection tests end to end: the REST actions, the real worker, a real sshd on loopback."""

from __future__ import annotations

import socket
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from tests.procs import free_port, pool_port, wait_for
from tests.worker_fixtures import make_key, sshd_tunnel_data, wait_status
from tunnels import preflight, processes, services, sshkeys
from tunnels.models import ConnectionTest, Desired, HostKeyState, KnownHost, Status, Tunnel, WorkerNode
from tunnels.models import TestState as State
from tunnels.preflight_runner import WORKER_GONE, PreflightRunner
from tunnels.ssh import NO_KEY_ERROR

pytestmark = pytest.mark.timeout(120)
ALL_STEPS = ["resolve", "connect", "host_key", "auth", "forward"]


def url(tunnel: Tunnel) -> str:
    return f"/api/v1/tunnels/{tunnel.uuid}/test/"


def stopped(key, sshd, **overrides) -> Tunnel:
    """A stopped tunnel of ``key``'s owner that authenticates with ``key``."""
    data = {**sshd_tunnel_data(sshd, **overrides), "ssh_key": str(key.pk)}
    return services.create_tunnel(key.owner, data, start=False)


def run_test(client, tunnel: Tunnel) -> dict:
    response = client.post(url(tunnel) + "?wait=30")
    assert response.status_code == 200, response.content
    return response.json()


def processes_of(data_dir) -> list[int]:
    """Processes whose command line names this test's data dir (a test's ssh names its known_hosts)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(str(data_dir) in arg for arg in cmdline):
            found.append(proc.info["pid"])
    return found


def assert_left_alone(tunnel: Tunnel, data_dir) -> None:
    """The tunnel was not started, and no test process is left."""
    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.desired_state, tunnel.pid) == (Status.STOPPED, Desired.STOPPED, None)
    assert processes.Scanner(data_dir).scan() == {}
    wait_for(lambda: not processes_of(data_dir), timeout=10, message="no test ssh left")


# --- against a real worker ---------------------------------------------------


def test_local_forward_passes_every_step_and_leaves_the_tunnel_stopped(
    worker, sshd, owner_key, owner_client, target_server, data_dir
):
    tunnel = stopped(owner_key, sshd, remote_port=str(target_server.port))

    body = run_test(owner_client, tunnel)

    assert (body["state"], body["ok"], body["step"]) == ("done", True, "forward"), body
    assert [s["step"] for s in body["steps"]] == ALL_STEPS
    assert all(s["ok"] for s in body["steps"])
    assert f"localhost:{target_server.port}" in body["steps"][-1]["detail"]
    assert "is free to listen on" in body["detail"]
    assert body["finished_at"] and body["id"] == body["result_url"].rstrip("/").rsplit("/", 1)[1]
    assert str(data_dir) not in str(body)
    assert_left_alone(tunnel, data_dir)
    # The server's key, trusted on first use by the test as by the tunnel, is kept for the owner.
    trusted = KnownHost.objects.filter(owner=owner_key.owner, port=sshd.port, state=HostKeyState.TRUSTED)
    wait_for(trusted.exists, timeout=10, message="the host key kept")


def test_wrong_key_fails_at_auth(worker, sshd, owner, owner_client, target_server, data_dir):
    not_authorized = make_key(owner, "not-on-the-server")
    tunnel = stopped(not_authorized, sshd, remote_port=str(target_server.port))

    body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (False, "auth"), body
    assert "permission denied" in body["detail"]
    assert [(s["step"], s["ok"]) for s in body["steps"]][-2:] == [("host_key", True), ("auth", False)]
    assert_left_alone(tunnel, data_dir)


def test_closed_ssh_port_fails_at_connect(worker, sshd, owner_key, owner_client, data_dir):
    tunnel = stopped(owner_key, sshd, ssh_port=free_port())

    body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (False, "connect"), body
    assert "connection refused" in body["detail"]
    assert [s["step"] for s in body["steps"]] == ["resolve", "connect"]
    assert_left_alone(tunnel, data_dir)


def test_remote_port_taken_on_the_server_fails_at_forward(
    worker, sshd, owner_key, owner_client, target_server, data_dir
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # the sshd runs on this host: its -R listen would clash
        taken.listen()
        port = taken.getsockname()[1]
        tunnel = stopped(
            owner_key,
            sshd,
            direction="local_to_remote",
            local_port=str(target_server.port),
            remote_port=f"127.0.0.1:{port}",
        )

        body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (False, "forward"), body
    assert "remote port forwarding failed" in body["detail"]
    assert f"127.0.0.1:{port}" in body["detail"]
    assert_left_alone(tunnel, data_dir)


def test_remote_forward_passes_when_the_port_is_free(worker, sshd, owner_key, owner_client, target_server, data_dir):
    tunnel = stopped(
        owner_key, sshd, direction="local_to_remote", local_port=str(target_server.port), remote_port=str(free_port())
    )

    body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (True, "forward"), body
    assert_left_alone(tunnel, data_dir)


def test_local_port_in_use_fails_at_forward_for_a_stopped_tunnel(worker, sshd, owner_key, owner_client, target_server):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", pool_port()))
        busy.listen()
        tunnel = stopped(owner_key, sshd, remote_port=str(target_server.port), local_port=str(busy.getsockname()[1]))

        body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (False, "forward"), body
    assert "address already in use" in body["detail"]


def test_unreachable_target_of_a_local_forward_fails_at_forward(worker, sshd, owner_key, owner_client):
    tunnel = stopped(owner_key, sshd, remote_port=str(free_port()))  # nothing listens there

    body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (False, "forward"), body
    assert "connect failed" in body["detail"]


def test_queued_without_worker_then_done_once_a_worker_runs(
    worker_factory, sshd, owner_key, owner_client, target_server, data_dir
):
    tunnel = stopped(owner_key, sshd, remote_port=str(target_server.port))

    response = owner_client.post(url(tunnel) + "?wait=0")

    assert response.status_code == 202
    body = response.json()
    assert (body["state"], body["ok"], body["steps"]) == ("pending", None, [])
    assert response["Location"] == body["result_url"]
    assert body["result_url"] == f"/api/v1/tunnels/{tunnel.uuid}/tests/{body['id']}/"
    # Asking again while it is pending returns the same test.
    assert owner_client.post(url(tunnel) + "?wait=0").json()["id"] == body["id"]

    worker_factory()

    def done():
        answer = owner_client.get(body["result_url"]).json()
        return answer if answer["state"] == "done" else None

    result = wait_for(done, timeout=30, message="the test result")
    assert (result["ok"], result["step"]) == (True, "forward"), result
    listed = owner_client.get(f"/api/v1/tunnels/{tunnel.uuid}/tests/").json()
    assert [entry["id"] for entry in listed["entries"]] == [body["id"]]
    assert_left_alone(tunnel, data_dir)


# --- coordination (in-process, no ssh) -------------------------------------------


@pytest.mark.django_db
def test_only_one_node_claims_a_test(owner):
    tunnel = services.create_tunnel(owner, sshd_tunnel_data_stub(), start=False)
    test = preflight.request_test(tunnel)

    assert PreflightRunner("node-a").claim(test.pk) is True
    assert PreflightRunner("node-b").claim(test.pk) is False
    test.refresh_from_db()
    assert (test.state, test.node) == (State.RUNNING, "node-a")


@pytest.mark.django_db
def test_a_test_left_running_by_a_dead_node_is_failed(owner, settings):
    tunnel = services.create_tunnel(owner, sshd_tunnel_data_stub(), start=False)
    long_ago = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS * 3)
    WorkerNode.objects.create(name="dead", last_seen=long_ago)
    WorkerNode.objects.create(name="alive")
    orphan = ConnectionTest.objects.create(
        tunnel=tunnel, owner=owner, state=State.RUNNING, node="dead", started_at=long_ago
    )
    busy = ConnectionTest.objects.create(
        tunnel=tunnel, owner=owner, state=State.RUNNING, node="alive", started_at=long_ago
    )

    PreflightRunner("me", threads=0).poll()

    orphan.refresh_from_db()
    busy.refresh_from_db()
    assert (orphan.state, orphan.ok, orphan.step, orphan.detail) == (State.DONE, False, "worker", WORKER_GONE)
    assert orphan.finished_at is not None
    assert busy.state == State.RUNNING


def sshd_tunnel_data_stub() -> dict:
    return {"name": "stub", "remote_host": "user@127.0.0.1", "remote_port": "80", "local_port": str(pool_port())}


def test_tunnel_without_a_key_fails_at_auth_before_running_ssh(worker, sshd, owner, owner_client, data_dir):
    tunnel = services.create_tunnel(owner, sshd_tunnel_data(sshd), start=False)

    body = run_test(owner_client, tunnel)

    assert [(s["step"], s["ok"]) for s in body["steps"]] == [("resolve", True), ("connect", True), ("auth", False)]
    assert body["detail"] == NO_KEY_ERROR
    assert_left_alone(tunnel, data_dir)


def test_running_remote_forward_is_tested_on_a_spare_port_and_keeps_running(
    worker, sshd, owner_key, owner_client, target_server
):
    data = sshd_tunnel_data(sshd, direction="local_to_remote", local_port=str(target_server.port))
    tunnel = services.create_tunnel(owner_key.owner, {**data, "ssh_key": str(owner_key.pk)})
    tunnel = wait_status(tunnel, "running")
    pid = tunnel.pid

    body = run_test(owner_client, tunnel)

    assert (body["ok"], body["step"]) == (True, "forward"), body
    assert "spare port" in body["detail"]
    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.pid) == (Status.RUNNING, pid)


def test_a_server_that_never_answers_fails_at_host_key(worker, sshd, owner_key, owner_client, silent_server, data_dir):
    tunnel = stopped(owner_key, sshd, ssh_port=silent_server)

    body = run_test(owner_client, tunnel)

    assert [(s["step"], s["ok"]) for s in body["steps"]] == [("resolve", True), ("connect", True), ("host_key", False)]
    assert body["detail"].startswith("no SSH handshake")
    assert "timed out" in body["detail"]
    assert_left_alone(tunnel, data_dir)


def test_worker_shutdown_ends_a_running_test_as_worker_gone(
    worker, sshd, owner_key, owner_client, silent_server, data_dir
):
    tunnel = stopped(owner_key, sshd, ssh_port=silent_server)
    test_id = owner_client.post(url(tunnel) + "?wait=0").json()["id"]
    wait_for(lambda: ConnectionTest.objects.get(pk=test_id).state == State.RUNNING, timeout=10, message="running")

    worker.stop()

    test = ConnectionTest.objects.get(pk=test_id)
    assert (test.state, test.ok, test.step, test.detail) == (State.DONE, False, "worker", WORKER_GONE)
    assert_left_alone(tunnel, data_dir)


def test_a_host_key_other_than_the_trusted_one_fails_at_host_key_and_records_nothing(
    worker, sshd, owner_key, owner_client, target_server, data_dir
):
    impostor = sshkeys.public_line(sshkeys.new_private_key()).split()
    pinned = KnownHost.objects.create(
        owner=owner_key.owner,
        host=sshd.host,
        port=sshd.port,
        key_type=impostor[0],
        key=impostor[1],
        fingerprint=sshkeys.fingerprint(" ".join(impostor)),
    )
    tunnel = stopped(owner_key, sshd, remote_port=str(target_server.port))

    body = run_test(owner_client, tunnel)

    assert [(s["step"], s["ok"]) for s in body["steps"]][-1] == ("host_key", False), body
    assert "host key verification failed" in body["detail"]
    pinned.refresh_from_db()
    assert pinned.state == HostKeyState.TRUSTED  # a test reports; only the tunnel itself marks a key changed
    assert_left_alone(tunnel, data_dir)
