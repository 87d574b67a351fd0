"""Small helpers to make tunnels in tests (through the service layer)."""

from __future__ import annotations

from itertools import count

from tunnels import services

_ports = count(20000)


def tunnel_data(**overrides) -> dict:
    port = next(_ports)
    data = {
        "name": f"t{port}",
        "remote_host": "user@example.com",
        "remote_port": "8080",
        "local_port": str(port),
    }
    data.update(overrides)
    return data


def make_tunnel(owner, **overrides):
    return services.create_tunnel(owner, tunnel_data(**overrides))
