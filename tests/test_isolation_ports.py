"""End to end: one user cannot take another user's port, nor the web app's.

Issue 11's rows, against a real sshd and the real worker: a second user asking for
a port a running tunnel holds (under any address spelling) is refused at creation
with a 409 that does not say whose port it is, and the victim's traffic keeps
reaching the victim's server, also across a restart of the victim's tunnel (the
moment the old behaviour handed the port over). A reserved port (the web app's)
is refused with a 403 and nobody's ssh listens there when the web app is down.
These run on the real defaults: the ordinary users have no range of their own.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import client_for
from tests.procs import pool_port, port_open, wait_for
from tests.test_worker_e2e import create
from tests.worker_fixtures import fetch, make_key, sshd_tunnel_data, start_target, wait_fetch, wait_status
from tunnels import services
from tunnels.models import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
URL = "/api/v1/tunnels/"


@pytest.fixture
def attacker_target():
    """The attacker's own server: it must never see the victim's traffic."""
    server = start_target()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def attacker_key(transactional_db, other, sshd):
    key = make_key(other, "attacker-laptop")
    sshd.authorize(key.public_key)
    yield key
    sshd.revoke(key.public_key)


def victim_tunnel(owner_key, sshd, target_server) -> Tunnel:
    data = sshd_tunnel_data(sshd, remote_port=f"127.0.0.1:{target_server.port}", name="victim-private-service")
    tunnel = wait_status(create(owner_key, data), "running", timeout=20)
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    return tunnel


def attack_body(attacker_key, sshd, attacker_target, local_port: str) -> dict:
    return {
        **sshd_tunnel_data(sshd, remote_port=f"127.0.0.1:{attacker_target.port}", local_port=local_port),
        "ssh_key": str(attacker_key.pk),
    }


def assert_refused_without_naming(response, status: int) -> None:
    assert response.status_code == status, response.content
    text = json.dumps(response.json())
    assert "alice" not in text and "victim" not in text


def test_another_users_port_is_409_and_the_victims_traffic_stays_with_the_victim(
    worker, sshd, owner_key, other, attacker_key, target_server, attacker_target
):
    victim = victim_tunnel(owner_key, sshd, target_server)
    port = int(victim.local_port)
    attacker = client_for(other)

    body = attack_body(attacker_key, sshd, attacker_target, str(port))
    assert_refused_without_naming(attacker.post(URL, body, format="json"), 409)
    assert_refused_without_naming(attacker.post("/config/new", body, format="json"), 409)
    assert_refused_without_naming(attacker.post("/config", {"tunnels": [body]}, format="json"), 409)
    assert not Tunnel.objects.filter(owner=other).exists()

    # The old failure: the victim's tunnel restarts and someone else's ssh wins the port.
    generation = victim.generation
    services.request_restart(victim)
    wait_for(
        lambda: Tunnel.objects.filter(pk=victim.pk, running_generation__gt=generation, status="running").exists(),
        timeout=20,
        message="the victim's tunnel restarted",
    )
    for _ in range(5):
        assert wait_fetch(port, target_server.greeting)
    assert attacker_target.greeting not in fetch(port)


def test_the_other_address_family_of_a_held_port_is_refused(
    worker, sshd, owner_key, other, attacker_key, target_server, attacker_target
):
    victim = victim_tunnel(owner_key, sshd, target_server)
    port = int(victim.local_port)
    attacker = client_for(other)

    loopback6 = attack_body(attacker_key, sshd, attacker_target, f"[::1]:{port}")
    assert_refused_without_naming(attacker.post(URL, loopback6, format="json"), 409)
    # Granted beyond loopback, the wildcard addresses hold the same port.
    other.allow_nonloopback_bind = True
    other.save()
    for spelling in (f"0.0.0.0:{port}", f"[::]:{port}"):
        body = attack_body(attacker_key, sshd, attacker_target, spelling)
        assert_refused_without_naming(attacker.post(URL, body, format="json"), 409)

    # A tunnel of the attacker's own runs meanwhile, so the worker has had passes to act on anything.
    own = {**attack_body(attacker_key, sshd, attacker_target, str(pool_port())), "name": "attacker-own"}
    assert attacker.post(URL, own, format="json").status_code == 201
    wait_status(Tunnel.objects.get(owner=other), "running", timeout=20)
    # Clients that resolve localhost to ::1 find nobody there, never the attacker's server.
    assert not port_open(port, "::1")
    assert wait_fetch(port, target_server.greeting)
    assert Tunnel.objects.filter(owner=other).count() == 1


def test_the_web_apps_port_is_refused_and_stays_free_while_the_app_is_down(
    worker, sshd, other, attacker_key, attacker_target, settings
):
    # The web app stands in on a port of the pool: the default TUNNELSITE_RESERVED_PORTS is the
    # port of TUNNELSITE_BIND (tests/test_ports.py checks that default); here it names this one.
    web = socket.socket()
    web.bind(("127.0.0.1", pool_port()))
    web.listen()
    web_port = web.getsockname()[1]
    settings.RESERVED_PORTS = [(web_port, web_port)]
    attacker = client_for(other)
    body = attack_body(attacker_key, sshd, attacker_target, str(web_port))
    try:
        response = attacker.post(URL, body, format="json")
        assert response.status_code == 403
        assert "reserved" in response.json()["error"]
    finally:
        web.close()  # the app restarts: its port is free for a moment

    assert attacker.post(URL, body, format="json").status_code == 403
    assert attacker.post("/config/new", body, format="json").status_code == 403
    # Nor can a port be assigned there: a range that is only the web port has no free port.
    other.local_port_min, other.local_port_max = web_port, web_port
    other.save()
    assigned = {key: value for key, value in body.items() if key != "local_port"}
    assert attacker.post(URL, assigned, format="json").status_code == 409
    assert not Tunnel.objects.filter(owner=other).exists()
    assert not port_open(web_port)
