"""The network policy at creation and update (tunnels.netpolicy through the service layer), on the real
defaults: -R targets on this host are a grant, SSH destinations follow allow/deny lists."""

from __future__ import annotations

import ipaddress

import pytest

from tests.factories import make_tunnel, tunnel_data
from tunnels import services
from tunnels.models import ConfigBackup, Tunnel
from tunnelsite import netrules
from tunnelsite.errors import PolicyDenied

pytestmark = pytest.mark.real_network_policy
URL = "/api/v1/tunnels/"


def reverse(target: str, **overrides) -> dict:
    """An -R tunnel whose connect target on this host is ``target``."""
    return tunnel_data(direction="local_to_remote", local_port=target, **overrides)


def assert_refused(client, data: dict, *words: str) -> str:
    response = client.post(URL, data, format="json")
    assert response.status_code == 403, response.content
    message = response.json()["error"]
    for word in words:
        assert word in message
    assert not Tunnel.objects.exists() and not ConfigBackup.objects.exists()
    return message


# --- -R targets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "category"),
    [
        ("127.0.0.1:5432", netrules.LOOPBACK),
        ("5432", netrules.LOOPBACK),  # no host: 127.0.0.1
        ("127.0.0.2:8080", netrules.LOOPBACK),
        ("[::1]:5432", netrules.LOOPBACK),
        ("[::ffff:127.0.0.1]:5432", netrules.LOOPBACK),
        ("0.0.0.0:5432", netrules.UNSPECIFIED),
        ("169.254.169.254:8080", netrules.LINK_LOCAL),
        ("10.0.0.5:5432", netrules.PRIVATE),
        ("[fd00::5]:5432", netrules.PRIVATE),
    ],
)
def test_a_target_on_this_host_or_its_networks_is_403(owner_client, target, category):
    message = assert_refused(owner_client, reverse(target), category, "allowed_targets", "TUNNELSITE_ALLOWED_TARGETS")
    assert message.startswith("-R target ")


def test_one_of_this_hosts_own_addresses_is_403_even_with_the_public_grant(owner, owner_client, monkeypatch):
    # A public address on this host's interfaces (pinned here: the machine running the tests may have none).
    own = ipaddress.ip_address("8.8.4.4")
    monkeypatch.setattr(netrules, "_host_cache", (float("inf"), netrules.host_addresses() | {own}))
    owner.allow_nonloopback_target = True
    owner.save()
    message = assert_refused(owner_client, reverse(f"{own}:5432"), netrules.THIS_HOST)
    assert "on the tunnelsite host" in message


def test_a_users_grant_allows_exactly_its_targets(owner, owner_client):
    owner.allowed_targets = "127.0.0.1:5432\n[::1]:6000-6010\n10.0.0.0/8:22"
    owner.save()
    for target in ("127.0.0.1:5432", "[::1]:6005"):
        assert owner_client.post(URL, reverse(target), format="json").status_code == 201
    assert_refused_kept = owner_client.post(URL, reverse("127.0.0.1:5433"), format="json")
    assert assert_refused_kept.status_code == 403
    assert owner_client.post(URL, reverse("[::1]:6011"), format="json").status_code == 403


def test_the_server_wide_grant_applies_to_every_user(owner_client, settings):
    settings.ALLOWED_TARGETS = ["127.0.0.0/8:15000-15999"]
    assert owner_client.post(URL, reverse("127.0.0.3:15001"), format="json").status_code == 201
    assert owner_client.post(URL, reverse("127.0.0.3:5432"), format="json").status_code == 403


def test_a_public_target_needs_its_own_grant_not_the_bind_grant(owner, owner_client):
    owner.allow_nonloopback_bind = True
    owner.save()
    assert_refused(owner_client, reverse("8.8.8.8:53"), "beyond this host", "allow_nonloopback_target")
    owner.allow_nonloopback_target = True
    owner.save()
    assert owner_client.post(URL, reverse("8.8.8.8:53"), format="json").status_code == 201


def test_the_target_grant_does_not_open_this_host(owner, owner_client):
    owner.allow_nonloopback_target = owner.allow_nonloopback_bind = True
    owner.save()
    assert_refused(owner_client, reverse("127.0.0.1:5432"), netrules.LOOPBACK)


def test_a_local_forward_is_not_a_target(owner_client):
    # -L: local_port is where the tunnel listens (the ports rules), not something it connects to.
    assert owner_client.post(URL, tunnel_data(local_port="127.0.0.1:25432"), format="json").status_code == 201


def test_staff_may_target_anything(staff_client):
    assert staff_client.post(URL, reverse("127.0.0.1:5432"), format="json").status_code == 201


def test_changing_a_tunnel_into_a_refused_target_is_403_and_changes_nothing(owner, owner_client):
    tunnel = make_tunnel(owner)
    backups = ConfigBackup.objects.count()
    response = owner_client.patch(f"{URL}{tunnel.uuid}/", {"direction": "local_to_remote"}, format="json")
    assert response.status_code == 403
    tunnel.refresh_from_db()
    assert tunnel.direction == "remote_to_local" and ConfigBackup.objects.count() == backups


def test_replace_all_with_one_refused_target_changes_nothing(owner):
    kept = make_tunnel(owner)
    with pytest.raises(PolicyDenied):
        services.replace_all(owner, [tunnel_data(), reverse("127.0.0.1:5432")])
    assert list(Tunnel.objects.values_list("pk", flat=True)) == [kept.pk]


# --- SSH destinations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "category"),
    [
        ("127.0.0.1", netrules.LOOPBACK),
        ("0", netrules.UNSPECIFIED),
        ("2130706433", netrules.LOOPBACK),
        ("0x7f.1", netrules.LOOPBACK),
        ("127.1", netrules.LOOPBACK),
        ("017700000001", netrules.LOOPBACK),
        ("169.254.169.254", netrules.LINK_LOCAL),
        ("224.0.0.1", netrules.MULTICAST),
        ("localhost", netrules.LOOPBACK),
        ("db.localhost", netrules.LOOPBACK),
    ],
)
def test_a_destination_on_this_host_is_403_in_every_spelling(owner_client, host, category):
    data = tunnel_data(remote_host=f"me@{host}", ssh_port=5432)
    message = assert_refused(owner_client, data, category, "ssh_destinations", "TUNNELSITE_SSH_DESTINATIONS_ALLOW")
    assert "SSH destination" in message and ":5432" in message


def test_private_and_public_destinations_are_allowed_by_default(owner_client):
    for host in ("10.0.0.5", "192.168.1.10", "203.0.113.7", "ssh.example.com"):
        response = owner_client.post(URL, tunnel_data(remote_host=f"me@{host}"), format="json")
        assert response.status_code == 201, response.content


def test_a_destination_grant_allows_its_network_and_ports(owner, owner_client):
    owner.ssh_destinations = "127.0.0.0/8:22\n[::1]"
    owner.save()
    assert owner_client.post(URL, tunnel_data(remote_host="me@127.0.0.1"), format="json").status_code == 201
    assert (
        owner_client.post(URL, tunnel_data(remote_host="me@2130706433", ssh_port=22), format="json").status_code == 201
    )
    refused = owner_client.post(URL, tunnel_data(remote_host="me@127.0.0.1", ssh_port=5432), format="json")
    assert refused.status_code == 403
    # localhost may mean ::1, which the grant covers on any port.
    assert (
        owner_client.post(URL, tunnel_data(remote_host="me@localhost", ssh_port=5432), format="json").status_code == 201
    )


def test_the_server_allow_list_overrides_the_built_in_deny(owner_client, settings):
    settings.SSH_DESTINATIONS_ALLOW = ["127.0.0.0/8"]
    assert (
        owner_client.post(URL, tunnel_data(remote_host="me@127.0.0.1", ssh_port=2222), format="json").status_code == 201
    )


def test_an_operator_deny_wins_over_every_allow(owner, owner_client, settings):
    settings.SSH_DESTINATIONS_DENY = ["10.0.0.0/8", "127.0.0.1:22"]
    settings.SSH_DESTINATIONS_ALLOW = ["127.0.0.0/8"]
    owner.ssh_destinations = "10.1.0.0/16\n127.0.0.1"
    owner.save()
    assert_refused(owner_client, tunnel_data(remote_host="me@10.1.2.3"), "TUNNELSITE_SSH_DESTINATIONS_DENY")
    assert_refused(owner_client, tunnel_data(remote_host="me@127.0.0.1"), "TUNNELSITE_SSH_DESTINATIONS_DENY")
    assert (
        owner_client.post(URL, tunnel_data(remote_host="me@127.0.0.1", ssh_port=2222), format="json").status_code == 201
    )


def test_staff_keep_reaching_any_destination_and_their_aliases(staff_client, settings):
    settings.SSH_DESTINATIONS_DENY = ["127.0.0.0/8"]
    for host in ("me@127.0.0.1", "my-alias", "me@localhost"):
        assert staff_client.post(URL, tunnel_data(remote_host=host, ssh_port=5432), format="json").status_code == 201


def test_changing_the_destination_to_this_host_is_403(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.patch(f"{URL}{tunnel.uuid}/", {"remote_host": "me@0x7f.1"}, format="json")
    assert response.status_code == 403
    tunnel.refresh_from_db()
    assert tunnel.remote_host == "user@example.com"


def test_the_compat_api_refuses_the_same(owner, owner_client):
    response = owner_client.post(
        "/api/autossh/config/new",
        {"name": "db", "remote_host": "me@2130706433", "remote_port": "80", "local_port": "25001", "ssh_port": 5432},
        format="json",
    )
    assert response.status_code == 403
    assert not Tunnel.objects.exists()


def test_a_destination_verdict_reads_ipv4_mapped_addresses_as_ipv4(owner):
    from tunnels.netpolicy import destination_verdict

    assert destination_verdict(owner, ipaddress.ip_address("::ffff:127.0.0.1"), 22)
    owner.ssh_destinations = "127.0.0.1"
    assert destination_verdict(owner, ipaddress.ip_address("::ffff:127.0.0.1"), 22) is None


def test_replace_all_checks_a_kept_tunnel_with_the_ssh_port_it_keeps(owner, owner_client, settings):
    """The original's panel sends six fields: the kept tunnel's ssh_port (allowed) is what is checked."""
    settings.SSH_DESTINATIONS_ALLOW = ["127.0.0.1:2222"]
    tunnel = make_tunnel(owner, remote_host="me@127.0.0.1", ssh_port=2222)
    six = {k: v for k, v in tunnel.compat_dict().items() if k != "hash"}
    response = owner_client.post("/config", {"tunnels": [six]}, format="json")
    assert response.status_code == 200, response.content
    assert Tunnel.objects.get().ssh_port == 2222
    # Sending the default port itself is checked as sent, and refused.
    refused = owner_client.post("/config", {"tunnels": [{**six, "ssh_port": None}]}, format="json")
    assert refused.status_code == 403
    assert Tunnel.objects.get().ssh_port == 2222
