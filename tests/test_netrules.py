"""Addresses and network rules (tunnelsite.netrules): numeric forms, categories, rule lines."""

from __future__ import annotations

import ipaddress

import pytest
from django.core.exceptions import ImproperlyConfigured

from tunnelsite import netrules
from tunnelsite.env import env_rules


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
    ],
)
def test_numeric_forms_are_the_address_the_resolver_reads(text, meant):
    assert netrules.numeric_address(text) == ipaddress.ip_address(meant)


@pytest.mark.parametrize("text", ["example.com", "localhost", "vm", "", "127.0.0.1 x", "1.2.3.4.5"])
def test_names_are_not_numeric(text):
    assert netrules.numeric_address(text) is None


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", netrules.LOOPBACK),
        ("127.255.0.9", netrules.LOOPBACK),
        ("::1", netrules.LOOPBACK),
        ("::ffff:127.0.0.1", netrules.LOOPBACK),
        ("169.254.169.254", netrules.LINK_LOCAL),
        ("fe80::1", netrules.LINK_LOCAL),
        ("0.0.0.0", netrules.UNSPECIFIED),
        ("0.1.2.3", netrules.UNSPECIFIED),
        ("::", netrules.UNSPECIFIED),
        ("224.0.0.1", netrules.MULTICAST),
        ("255.255.255.255", netrules.MULTICAST),
        ("ff02::1", netrules.MULTICAST),
        ("10.1.2.3", netrules.PRIVATE),
        ("192.168.1.1", netrules.PRIVATE),
        ("100.64.0.1", netrules.PRIVATE),
        ("fd12::1", netrules.PRIVATE),
        ("::ffff:10.0.0.1", netrules.PRIVATE),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_categories(address, category):
    assert netrules.classify(ipaddress.ip_address(address)) == category


def test_this_hosts_own_addresses_are_their_own_category(monkeypatch):
    # A public address on one of this host's interfaces is this host, not "somewhere else".
    monkeypatch.setattr(netrules, "_host_cache", (float("inf"), frozenset({ipaddress.ip_address("8.8.4.4")})))
    assert netrules.classify(ipaddress.ip_address("8.8.4.4")) == netrules.THIS_HOST
    assert netrules.classify(ipaddress.ip_address("8.8.8.8")) is None


def test_host_addresses_come_from_the_interfaces():
    assert ipaddress.ip_address("127.0.0.1") in netrules.host_addresses()


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "db.localhost", "localhost.localdomain", "ip6-localhost"])
def test_local_names(name):
    assert netrules.is_local_name(name)


@pytest.mark.parametrize(
    ("line", "network", "low", "high"),
    [
        ("127.0.0.1:5432", "127.0.0.1/32", 5432, 5432),
        ("127.0.0.1:5000-5999", "127.0.0.1/32", 5000, 5999),
        ("10.0.0.0/8:22", "10.0.0.0/8", 22, 22),
        ("10.0.0.0/8:1024-65535", "10.0.0.0/8", 1024, 65535),
        ("[::1]:5432", "::1/128", 5432, 5432),
        ("[fd00::/8]:22", "fd00::/8", 22, 22),
        ("[fd00::/8]:20-30", "fd00::/8", 20, 30),
        ("127.1:80", "127.0.0.1/32", 80, 80),
        ("  10.0.0.5:80  ", "10.0.0.5/32", 80, 80),
    ],
)
def test_rules_with_ports(line, network, low, high):
    rule = netrules.parse_rule(line, port_required=True)
    assert (rule.network, rule.low, rule.high) == (ipaddress.ip_network(network), low, high)


@pytest.mark.parametrize(
    ("line", "network"), [("127.0.0.0/8", "127.0.0.0/8"), ("fd00::/8", "fd00::/8"), ("[::1]", "::1/128")]
)
def test_destination_rules_may_leave_the_port_out(line, network):
    rule = netrules.parse_rule(line, port_required=False)
    assert (rule.network, rule.low, rule.high) == (ipaddress.ip_network(network), 1, 65535)
    with pytest.raises(netrules.RuleError, match="a port is required"):
        netrules.parse_rule(line, port_required=True)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("db.internal:5432", "not an IP address or CIDR"),
        ("10.0.0.1:0", "1 <= low <= high <= 65535"),
        ("10.0.0.1:70000", "1 <= low <= high <= 65535"),
        ("10.0.0.1:9-3", "1 <= low <= high <= 65535"),
        ("10.0.0.1:http", "not a port or a range"),
        ("10.0.0.0/33:22", "not a valid CIDR"),
        ("[::1:22", "expected \\[IPv6 address or CIDR\\]:port"),
        ("[::1]x", "expected \\[IPv6 address or CIDR\\]:port"),
    ],
)
def test_bad_rules_say_what_is_wrong(line, message):
    with pytest.raises(netrules.RuleError, match=message):
        netrules.parse_rule(line, port_required=False)


def test_every_bad_line_is_named():
    with pytest.raises(netrules.RuleErrors) as caught:
        netrules.parse_rules("# comment\n10.0.0.1:22\nnope:22\n\n10.0.0.1\n", port_required=True)
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["line 3", "line 5"]


def test_a_rule_matches_its_network_and_ports_only():
    rule = netrules.parse_rule("127.0.0.0/8:5000-5999", port_required=True)
    assert rule.matches(ipaddress.ip_address("127.0.0.2"), 5432)
    assert rule.matches(ipaddress.ip_address("::ffff:127.0.0.2"), 5432)
    assert not rule.matches(ipaddress.ip_address("127.0.0.2"), 6000)
    assert not rule.matches(ipaddress.ip_address("::1"), 5432)


def test_settings_refuse_a_bad_rule_by_name(monkeypatch):
    monkeypatch.setenv("TUNNELSITE_ALLOWED_TARGETS", "127.0.0.1:5432, 10.0.0.0/8")
    with pytest.raises(ImproperlyConfigured, match="TUNNELSITE_ALLOWED_TARGETS: item 2: '10.0.0.0/8': a port"):
        env_rules("TUNNELSITE_ALLOWED_TARGETS", port_required=True)
    monkeypatch.setenv("TUNNELSITE_SSH_DESTINATIONS_DENY", "10.0.0.0/8,[fd00::/8]:22")
    assert env_rules("TUNNELSITE_SSH_DESTINATIONS_DENY", port_required=False) == ["10.0.0.0/8", "[fd00::/8]:22"]
