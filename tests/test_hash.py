from __future__ import annotations

import pytest

from tests.factories import make_tunnel
from tunnels.hashing import compat_hash
from tunnels.models import Tunnel

VECTOR = "fc3cce1090fec9102e4dd5e3c482b1e1"


def test_hash_test_vector():
    assert compat_hash("dockge@tempest", "oaklight.tempest", "5001", "55001", "remote_to_local", False) == VECTOR


@pytest.mark.django_db
def test_saved_tunnel_uses_defaults_for_hash(owner, settings):
    settings.PORT_RANGE = (1024, 65535)  # the vector's port lies outside the default pool
    tunnel = make_tunnel(
        owner, name="dockge@tempest", remote_host="oaklight.tempest", remote_port="5001", local_port="55001"
    )
    assert (tunnel.direction, tunnel.interactive) == ("remote_to_local", False)
    assert tunnel.hash == VECTOR
    assert Tunnel.objects.get(pk=tunnel.pk).hash == VECTOR


@pytest.mark.django_db
def test_missing_name_defaults_to_unnamed(owner):
    tunnel = make_tunnel(owner, name=None)
    assert tunnel.name == "unnamed"
    assert tunnel.hash == compat_hash(
        "unnamed", tunnel.remote_host, tunnel.remote_port, tunnel.local_port, "remote_to_local", False
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "other"),
        ("remote_host", "x@other"),
        ("remote_port", "5002"),
        ("local_port", "55002"),
        ("direction", "local_to_remote"),
        ("interactive", True),
    ],
)
def test_any_of_the_six_fields_changes_the_hash(field, value):
    base = {
        "name": "dockge@tempest",
        "remote_host": "oaklight.tempest",
        "remote_port": "5001",
        "local_port": "55001",
        "direction": "remote_to_local",
        "interactive": False,
    }
    changed = {**base, field: value}
    assert compat_hash(**changed) != VECTOR


def test_interactive_is_written_true_or_false():
    assert compat_hash("a", "h", "1", "2", "remote_to_local", True) != compat_hash(
        "a", "h", "1", "2", "remote_to_local", False
    )
    import hashlib

    assert (
        compat_hash("a", "h", "1", "2", "remote_to_local", True)
        == hashlib.md5(b"a|h|1|2|remote_to_local|true").hexdigest()
    )
