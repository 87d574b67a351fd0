from __future__ import annotations

import pytest

from tunnels.validation import (
    FieldError,
    TunnelDataError,
    clean_direction,
    clean_local_port,
    clean_name,
    clean_remote_host,
    clean_remote_port,
    clean_tunnel_data,
)


@pytest.mark.parametrize("value", ["user@host.example.com", "alias", "my_alias-2", "u.s-e_r@10.0.0.1", "h"])
def test_remote_host_accepts(value):
    assert clean_remote_host(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "-oProxyCommand=x",
        "host -R 1:x:1",
        "",
        " ",
        "a@b@c",
        "user@-host",
        "-host",
        "ho'st",
        'ho"st',
        "a=b",
        "a/b",
        "host\n",
        "ho\x00st",
        "x" * 256,
        "host;rm",
        "$(id)",
        "user@",
        "@host",
        None,
        5,
    ],
)
def test_remote_host_rejects(value):
    with pytest.raises(FieldError):
        clean_remote_host(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("8080", "8080"),
        (8080, "8080"),
        ("db:5432", "db:5432"),
        ("10.0.0.2:22", "10.0.0.2:22"),
        ("[::1]:80", "[::1]:80"),
        ("1", "1"),
        ("65535", "65535"),
    ],
)
def test_remote_port_accepts(value, expected):
    assert clean_remote_port(value) == expected


@pytest.mark.parametrize(
    "value", ["0", "65536", "abc", "1.5", 1.5, "", "-1", "host:", ":80", "-oX=y:80", "a b:80", True, None, "[zz]:80"]
)
def test_remote_port_rejects(value):
    with pytest.raises(FieldError):
        clean_remote_port(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("18080", "18080"),
        (18080, "18080"),
        ("127.0.0.1:18080", "127.0.0.1:18080"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("[::1]:18080", "[::1]:18080"),
        ("[2001:db8::1]:9000", "[2001:db8::1]:9000"),
    ],
)
def test_local_port_accepts(value, expected):
    assert clean_local_port(value) == expected


@pytest.mark.parametrize(
    "value", ["0", "65536", "abc", "1.5", "localhost:80", "::1:80", "[::1]80", "999.1.1.1:80", "", False, []]
)
def test_local_port_rejects(value):
    with pytest.raises(FieldError):
        clean_local_port(value)


def test_name_defaults_and_limits():
    assert clean_name(None) == "unnamed"
    assert clean_name("") == "unnamed"
    assert clean_name("数据库 tunnel ✓") == "数据库 tunnel ✓"
    assert clean_name("x" * 100) == "x" * 100
    for bad in ["x" * 101, "tab\there", "new\nline", 12]:
        with pytest.raises(FieldError):
            clean_name(bad)


def test_direction():
    assert clean_direction(None) == "remote_to_local"
    assert clean_direction("local_to_remote") == "local_to_remote"
    with pytest.raises(FieldError):
        clean_direction("sideways")


def test_clean_tunnel_data_names_missing_fields():
    with pytest.raises(TunnelDataError) as info:
        clean_tunnel_data({"name": "x"})
    assert str(info.value) == "Missing required fields: remote_host, remote_port, local_port"


def test_clean_tunnel_data_collects_every_error():
    with pytest.raises(TunnelDataError) as info:
        clean_tunnel_data(
            {"remote_host": "-oProxyCommand=x", "remote_port": "0", "local_port": "1", "interactive": "maybe"}
        )
    assert set(info.value.fields) == {"remote_host", "remote_port", "interactive"}


def test_clean_tunnel_data_rejects_non_objects():
    for body in [[], "x", None, 3]:
        with pytest.raises(TunnelDataError):
            clean_tunnel_data(body)


def test_interactive_accepts_original_string_form():
    data = clean_tunnel_data({"remote_host": "h", "remote_port": 1, "local_port": 2000, "interactive": "true"})
    assert data["interactive"] is True


# --- IPv6 zone ids ----------------------------------------------------------
# ipaddress accepts almost anything after "%"; only interface-name characters may reach ssh.

HOSTILE_ZONES = [
    "fe80::1%x -oProxyCommand=sh",
    "::1%\"''$(id)",
    '::1%a b="c',
    "fe80::1%eth0\n",
    "fe80::1%tab\there",
    "fe80::1%a=b",
    "fe80::1%-oX",
    "fe80::1%;id",
    "fe80::1%" + "e" * 16,
]


@pytest.mark.parametrize("host", HOSTILE_ZONES)
def test_remote_port_refuses_a_hostile_zone_id(host):
    with pytest.raises(FieldError, match="remote_port.*zone id"):
        clean_remote_port(f"[{host}]:22")


@pytest.mark.parametrize("host", HOSTILE_ZONES)
def test_local_port_refuses_a_hostile_zone_id(host):
    with pytest.raises(FieldError, match="local_port.*zone id"):
        clean_local_port(f"[{host}]:17021")


def test_hostile_zone_id_is_a_field_error_for_the_whole_tunnel():
    with pytest.raises(TunnelDataError) as info:
        clean_tunnel_data(
            {"remote_host": "u@h", "local_port": '[::1%a b="c]:17021', "remote_port": "[fe80::1%x -oX=sh]:22"}
        )
    assert set(info.value.fields) == {"local_port", "remote_port"}


@pytest.mark.parametrize("zone", ["eth0", "enp0s31f6", "wlan0.100", "br-lan", "veth_a1", "3", "e" * 15])
def test_interface_name_zone_ids_are_kept(zone):
    # ssh -L/-R hand the bracketed host to getaddrinfo, which resolves the zone
    # by interface name or index: link-local forwards need it.
    assert clean_remote_port(f"[fe80::1%{zone}]:22") == f"[fe80::1%{zone}]:22"
    assert clean_local_port(f"[fe80::1%{zone}]:18080") == f"[fe80::1%{zone}]:18080"


@pytest.mark.parametrize("value", ["fe80::1%eth0:22", "[fe80::1%]:22", "[fe80::1%%eth0]:22"])
def test_malformed_zone_ids_are_refused(value):
    with pytest.raises(FieldError):
        clean_remote_port(value)
    with pytest.raises(FieldError):
        clean_local_port(value)
