"""Small helpers to make tunnels in tests (through the service layer)."""

from __future__ import annotations

from itertools import count

from tunnels import services

_ports = count()


def tunnel_data(**overrides) -> dict:
    port = 20000 + next(_ports) % 10000  # inside the default pool (TUNNELSITE_PORT_RANGE)
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
