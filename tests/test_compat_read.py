"""Compat API, reading: /list, /status, /config, /config/<h>, /logs, /logs/<h>, hash prefixes, isolation."""

from __future__ import annotations

import hashlib
import os
import time
from functools import cache

import pytest

from tests.factories import make_tunnel
from tunnels.models import Status, Tunnel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _seed_ports(settings):
    """The seed's examples listen on ports (13306-55001) outside the default pool: widen it here."""
    settings.PORT_RANGE = (1024, 65535)


MOUNTS = ["", "/api/autossh"]
TUNNEL_KEYS = {"name", "remote_host", "remote_port", "local_port", "direction", "interactive", "hash"}
LIST_KEYS = {"name", "status", "local_port", "remote_host", "remote_port", "hash"}


@cache
def colliding_names() -> tuple[str, str]:
    """Two names whose tunnels (same other fields) share the first 8 hex chars of their hash.

    -R tunnels: two -L tunnels could not both listen on port 9000."""
    seen: dict[str, str] = {}
    for i in range(2_000_000):
        name = f"amb-{i}"
        digest = hashlib.md5(f"{name}|user@example.com|8080|9000|local_to_remote|false".encode()).hexdigest()
        if digest[:8] in seen:
            return seen[digest[:8]], name
        seen[digest[:8]] = name
    raise AssertionError("no collision found")


def write_log(tunnel: Tunnel, text: str) -> None:
    tunnel.log_path.parent.mkdir(parents=True, exist_ok=True)
    tunnel.log_path.write_text(text)


# --- /list and /status ----------------------------------------------------


@pytest.mark.parametrize("mount", MOUNTS)
def test_list_shape_with_normal_and_interactive(mount, owner, owner_client):
    plain = make_tunnel(owner, name="done-hub", remote_host="cloud.usa2", remote_port=33000, local_port=33001)
    inter = make_tunnel(owner, interactive=True)
    response = owner_client.get(f"{mount}/list")
    assert response.status_code == 200
    assert response.json() == [
        {
            "name": "done-hub",
            "status": "NORMAL",
            "local_port": "33001",
            "remote_host": "cloud.usa2",
            "remote_port": "33000",
            "hash": plain.hash,
        },
        {
            "name": inter.name,
            "status": "INTERACTIVE",
            "local_port": inter.local_port,
            "remote_host": inter.remote_host,
            "remote_port": inter.remote_port,
            "hash": inter.hash,
        },
    ]


# The original's vocabulary (its panel and clients know these four and nothing else).
ORIGINAL_STATES = {
    Status.RUNNING: "RUNNING",
    Status.STARTING: "STARTING",
    Status.STOPPED: "STOPPED",
    Status.BACKOFF: "DEAD",
    Status.FAILED: "DEAD",
    Status.NEEDS_AUTH: "DEAD",
}


def test_every_tunnelsite_state_has_a_word_of_the_original():
    assert set(ORIGINAL_STATES) == set(Status.values)


@pytest.mark.parametrize("mount", MOUNTS)
def test_status_is_observed_state_in_the_originals_words(mount, owner, owner_client):
    tunnels = [make_tunnel(owner) for _ in Status.values]
    for tunnel, status in zip(tunnels, Status.values, strict=True):
        Tunnel.objects.filter(pk=tunnel.pk).update(status=status)
    body = owner_client.get(f"{mount}/status").json()
    assert [item["status"] for item in body] == [ORIGINAL_STATES[value] for value in Status.values]
    assert all(set(item) == LIST_KEYS for item in body)
    assert [item["hash"] for item in body] == [t.hash for t in tunnels]
    # The REST API keeps tunnelsite's own states.
    rest = {t["hash"]: t["status"] for t in owner_client.get("/api/v1/tunnels/").json()["entries"]}
    assert [rest[t.hash] for t in tunnels] == list(Status.values)


@pytest.mark.parametrize("path", ["/list", "/status", "/config", "/logs"])
def test_list_endpoints_cost_the_same_queries_for_5_and_50_tunnels(
    path, owner, owner_client, django_assert_num_queries
):
    for _ in range(5):
        make_tunnel(owner)
    owner_client.get(path)  # token last-used write happens once a minute: get it out of the way
    counts = []
    for total in (5, 50):
        while Tunnel.objects.count() < total:
            make_tunnel(owner)
        # auth (token + user), the tunnels query, the request-history insert
        with django_assert_num_queries(3):
            response = owner_client.get(path)
        counts.append(len(response.json()["tunnels"] if path == "/config" else response.json()))
    assert counts == ([0, 0] if path == "/logs" else [5, 50])


# --- /config and /config/<h> ----------------------------------------------


@pytest.mark.parametrize("mount", MOUNTS)
def test_config_returns_every_tunnel_object(mount, owner, owner_client):
    first = make_tunnel(
        owner, name="dockge@tempest", remote_host="oaklight.tempest", remote_port="5001", local_port="55001"
    )
    second = make_tunnel(owner, direction="local_to_remote", interactive=True)
    body = owner_client.get(f"{mount}/config").json()
    assert body == {"tunnels": [first.compat_dict(), second.compat_dict()]}
    assert body["tunnels"][0]["hash"] == "fc3cce1090fec9102e4dd5e3c482b1e1"  # COMPAT.md test vector
    assert set(body["tunnels"][1]) == TUNNEL_KEYS and body["tunnels"][1]["interactive"] is True


def test_config_shows_tunnelsite_settings_only_when_not_default(owner, owner_client):
    make_tunnel(owner, ssh_port=2222, auto_restart=False)
    item = owner_client.get("/config").json()["tunnels"][0]
    assert item["ssh_port"] == 2222 and item["auto_restart"] is False


@pytest.mark.parametrize("mount", MOUNTS)
@pytest.mark.parametrize("length", [8, 12, 32])
def test_config_one_by_prefix(mount, length, owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.get(f"{mount}/config/{tunnel.hash[:length]}")
    assert response.status_code == 200
    assert response.json() == tunnel.compat_dict()


def test_config_one_accepts_upper_case_prefix(owner, owner_client):
    tunnel = make_tunnel(owner)
    assert owner_client.get(f"/config/{tunnel.hash[:10].upper()}").json()["hash"] == tunnel.hash


# --- hash prefix errors (every <hash> route) ------------------------------

PREFIX_ROUTES = [
    ("get", "/config/{}"),
    ("post", "/config/{}"),
    ("put", "/config/{}"),
    ("delete", "/config/{}"),
    ("post", "/config/{}/delete"),
    ("get", "/logs/{}"),
    ("post", "/start/{}"),
    ("post", "/stop/{}"),
    ("post", "/delete/{}"),
    ("delete", "/delete/{}"),
]
BODY = {"remote_host": "user@example.com", "remote_port": "8080", "local_port": "9999"}


def call(client, method: str, path: str):
    if method in ("post", "put"):
        return getattr(client, method)(path, BODY, format="json")
    return getattr(client, method)(path)


@pytest.mark.parametrize(("method", "route"), PREFIX_ROUTES)
def test_prefix_shorter_than_8_is_400(method, route, owner, owner_client):
    tunnel = make_tunnel(owner)
    response = call(owner_client, method, route.format(tunnel.hash[:7]))
    assert response.status_code == 400
    assert response.json() == {"error": "Hash prefix too short (minimum 8 characters, got 7)"}
    assert Tunnel.objects.filter(pk=tunnel.pk, hash=tunnel.hash).exists()


@pytest.mark.parametrize(("method", "route"), PREFIX_ROUTES)
def test_unknown_prefix_is_404(method, route, owner, owner_client):
    make_tunnel(owner)
    for prefix in ("00000000", "0" * 32):
        response = call(owner_client, method, route.format(prefix))
        assert response.status_code == 404
        assert response.json() == {"error": f"No tunnel found with hash prefix: {prefix}"}


@pytest.mark.parametrize(("method", "route"), PREFIX_ROUTES)
def test_ambiguous_prefix_is_400_listing_both(method, route, owner, owner_client):
    names = colliding_names()
    tunnels = [
        make_tunnel(owner, name=n, local_port="9000", remote_port="8080", direction="local_to_remote") for n in names
    ]
    prefix = tunnels[0].hash[:8]
    assert tunnels[1].hash[:8] == prefix
    response = call(owner_client, method, route.format(prefix))
    assert response.status_code == 400
    expected = sorted(t.hash for t in tunnels)
    message = response.json()["error"]
    assert message.startswith(f"Ambiguous hash prefix '{prefix}' matches 2 tunnels:\n")
    assert message.endswith("\nPlease use more characters to uniquely identify the tunnel.")
    assert sorted(line.strip() for line in message.splitlines()[1:3]) == expected
    # A longer prefix picks one.
    assert owner_client.get(f"/config/{tunnels[0].hash[:12]}").json()["hash"] == tunnels[0].hash
    assert Tunnel.objects.filter(owner=owner).count() == 2


# --- logs -----------------------------------------------------------------


@pytest.mark.parametrize("mount", MOUNTS)
def test_logs_lists_only_tunnels_with_a_log(mount, owner, owner_client):
    with_log, _without = make_tunnel(owner), make_tunnel(owner)
    write_log(with_log, "x" * 4000)
    stamp = time.mktime((2026, 1, 25, 12, 0, 0, 0, 0, -1))
    os.utime(with_log.log_path, (stamp, stamp))
    body = owner_client.get(f"{mount}/logs").json()
    assert body == [
        {
            "hash": with_log.hash,
            "filename": f"tunnel-{with_log.hash}.log",
            "size": "4.0K",
            "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)),
        }
    ]


@pytest.mark.parametrize("mount", MOUNTS)
@pytest.mark.parametrize("lines", ["\u00b2", "\u0663", "-1", "x"])
def test_log_bad_lines_is_400(mount, lines, owner, owner_client):
    tunnel = make_tunnel(owner)
    write_log(tunnel, "line\n")
    response = owner_client.get(f"{mount}/logs/{tunnel.hash[:8]}", {"lines": lines})
    assert response.status_code == 400 and "lines" in response.json()["error"]


@pytest.mark.parametrize("mount", MOUNTS)
def test_log_returns_last_100_lines_by_default(mount, owner, owner_client):
    tunnel = make_tunnel(owner)
    write_log(tunnel, "".join(f"line {i}\r\n" for i in range(250)))
    response = owner_client.get(f"{mount}/logs/{tunnel.hash[:8]}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "tunnel_hash", "log"}
    assert body["status"] == "success" and body["tunnel_hash"] == tunnel.hash
    assert body["log"] == "".join(f"line {i}\n" for i in range(150, 250))


def test_log_lines_parameter_and_cap(owner, owner_client):
    tunnel = make_tunnel(owner)
    write_log(tunnel, "".join(f"{i}\n" for i in range(20_000)))
    assert owner_client.get(f"/logs/{tunnel.hash}?lines=3").json()["log"] == "19997\n19998\n19999\n"
    capped = owner_client.get(f"/logs/{tunnel.hash}?lines=999999").json()["log"]
    assert capped.count("\n") == 10_000 and capped.startswith("10000\n")
    assert owner_client.get(f"/logs/{tunnel.hash}?lines=abc").status_code == 400
    assert owner_client.get(f"/logs/{tunnel.hash}?lines=0").status_code == 400


def test_log_tail_reads_across_blocks_and_keeps_a_last_line_without_newline(owner, owner_client):
    tunnel = make_tunnel(owner)
    long_line = "y" * 100_000
    write_log(tunnel, f"first\n{long_line}\nlast without newline")
    assert owner_client.get(f"/logs/{tunnel.hash}?lines=2").json()["log"] == f"{long_line}\nlast without newline"
    assert owner_client.get(f"/logs/{tunnel.hash}?lines=5").json()["log"].startswith("first\n")


def test_log_missing_file_is_404_with_full_hash(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.get(f"/logs/{tunnel.hash[:8]}")
    assert response.status_code == 404
    assert response.json() == {"error": f"Log file not found for tunnel: {tunnel.hash}"}


# --- isolation ------------------------------------------------------------


def test_other_user_sees_none_of_owners_tunnels(owner, other, other_client, owner_client):
    mine = make_tunnel(owner)
    write_log(mine, "secret\n")
    theirs = make_tunnel(other)
    assert [t["hash"] for t in other_client.get("/list").json()] == [theirs.hash]
    assert [t["hash"] for t in other_client.get("/status").json()] == [theirs.hash]
    assert [t["hash"] for t in other_client.get("/config").json()["tunnels"]] == [theirs.hash]
    assert other_client.get("/logs").json() == []
    for method, route in PREFIX_ROUTES:
        response = call(other_client, method, route.format(mine.hash))
        assert response.status_code == 404, (method, route)
    mine.refresh_from_db()
    assert mine.compat_dict() == owner_client.get(f"/config/{mine.hash}").json()


def test_staff_with_admin_scope_sees_everyones_tunnels(owner, other, staff_client):
    hashes = {make_tunnel(owner).hash, make_tunnel(other).hash}
    assert {t["hash"] for t in staff_client.get("/list").json()} == hashes


def test_response_builders_match_the_documented_serializers(owner):
    from tunnels.compat import serializers as s
    from tunnels.services_keys import generate_key

    key = generate_key(owner, "laptop")
    tunnel = make_tunnel(owner, ssh_port=2222, auto_restart=False, ssh_key=str(key.pk))
    assert set(s.config_item(tunnel)) == set(s.CompatTunnelSerializer().fields)
    assert set(s.list_item("n", "NORMAL", "1", "h", "2", "x")) == set(s.ListItemSerializer().fields)
