"""OpenAPI examples of the compat API, from the autossh manager's API document (seed 001).

Names, hosts and ports are the seed's. Hashes are what tunnelsite computes for
those fields (``tunnels.hashing.compat_hash``): the seed's printed ones cannot be
reproduced (COMPAT.md). Bodies the seed leaves out come from COMPAT.md "Shapes";
``output`` and ``log`` are tunnelsite's own text. ``tests/test_schema.py`` checks
every example against its documented schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample

DONE_HUB = "e23bb5a24bbd7db75f32859d51e04268"
DOCKGE = "fc3cce1090fec9102e4dd5e3c482b1e1"
MY_TUNNEL = "df9088e31f24d5fcd80da7d01a648030"
ANOTHER_TUNNEL = "cab98f99afe9629fe03c1286936ad295"
MY_NEW_TUNNEL = "216720afda6c510fae6fc05f8327c5e7"
UPDATED_TUNNEL = "63ea8284f8cece631fef2334e69f8924"


def response(name: str, value: Any, status: int = 200) -> OpenApiExample:
    return OpenApiExample(name, value=value, response_only=True, status_codes=[str(status)])


def request(name: str, value: dict[str, Any]) -> OpenApiExample:
    return OpenApiExample(name, value=value, request_only=True)


def _tunnel(name: str, host: str, remote_port: str, local_port: str, hash_value: str | None = None) -> dict:
    item = {
        "name": name,
        "remote_host": host,
        "remote_port": remote_port,
        "local_port": local_port,
        "direction": "remote_to_local",
        "interactive": False,
    }
    return item if hash_value is None else {**item, "hash": hash_value}


# --- list and status (list examples are one item: drf-spectacular wraps them in the array) ---

LIST = response(
    "configured tunnel",
    {
        "name": "dockge@tempest",
        "status": "NORMAL",
        "local_port": "55001",
        "remote_host": "oaklight.tempest",
        "remote_port": "5001",
        "hash": DOCKGE,
    },
)
STATUS = response(
    "running tunnel",
    {
        "name": "dockge@tempest",
        "status": "RUNNING",
        "local_port": "55001",
        "remote_host": "oaklight.tempest",
        "remote_port": "5001",
        "hash": DOCKGE,
    },
)

# --- start / stop -------------------------------------------------------

START = response(
    "started",
    {
        "status": "success",
        "tunnel_hash": DONE_HUB,
        "output": f"Starting tunnel: done-hub ({DONE_HUB})\nstarted, pid 4242",
    },
)
STOP = response(
    "stopped",
    {"status": "success", "tunnel_hash": DONE_HUB, "output": f"Stopping tunnel: done-hub ({DONE_HUB})\nstopped"},
)

START_ALL = response(
    "two started, one skipped",
    {
        "status": "success",
        "output": f"Starting 2 tunnel(s)\ndone-hub ({DONE_HUB}): started, pid 4242\n"
        f"my-tunnel ({MY_TUNNEL}): failed: connection refused\n"
        f"skipped (interactive, needs interactive authentication): another-tunnel ({ANOTHER_TUNNEL})",
    },
)
STOP_ALL = response(
    "stopped",
    {"status": "success", "output": f"Stopping 1 tunnel(s)\ndone-hub ({DONE_HUB}): stopped"},
)

# --- configuration ------------------------------------------------------

MY_NEW = _tunnel("my-new-tunnel", "user@server.example.com", "8080", "18080")
UPDATED = {
    "name": "updated-tunnel",
    "remote_host": "user@new-server.example.com",
    "remote_port": "9090",
    "local_port": "19090",
}
EDIT = [
    request("add a tunnel", MY_NEW),
    request("update a tunnel", {"hash": DONE_HUB, **UPDATED}),
    response("added", {"status": "success", "action": "added", "hash": MY_NEW_TUNNEL}, 201),
    response("updated", {"status": "success", "action": "updated", "old_hash": DONE_HUB, "new_hash": UPDATED_TUNNEL}),
]
DELETE = response("deleted", {"status": "success", "action": "deleted", "hash": DONE_HUB})
CONFIG = response(
    "two tunnels",
    {
        "tunnels": [
            _tunnel("my-tunnel", "user@server.example.com", "8080", "18080", MY_TUNNEL),
            _tunnel("another-tunnel", "user@other.example.com", "3306", "13306", ANOTHER_TUNNEL),
        ]
    },
)
CONFIG_ONE = response("one tunnel", _tunnel("my-tunnel", "user@server.example.com", "8080", "18080", MY_TUNNEL))
CONFIG_REPLACE = [
    request(
        "two tunnels",
        {
            "tunnels": [
                _tunnel("tunnel-1", "user@server1.example.com", "8080", "18080"),
                {
                    "name": "tunnel-2",
                    "remote_host": "user@server2.example.com",
                    "remote_port": "3306",
                    "local_port": "13306",
                },
            ]
        },
    ),
    response("saved", {"status": "success", "message": "Configuration saved"}),
]
CONFIG_NEW = [
    request("new tunnel", MY_NEW),
    response("added", {**MY_NEW, "hash": MY_NEW_TUNNEL}, 201),
]
CONFIG_UPDATE = [
    request("new settings", UPDATED),
    response("updated", {**UPDATED, "direction": "remote_to_local", "interactive": False, "hash": UPDATED_TUNNEL}),
]
CONFIG_DELETED = response("deleted", {"status": "success", "message": "Tunnel deleted"})

# --- logs ---------------------------------------------------------------

LOGS = response(
    "one log file",
    {
        "hash": DONE_HUB,
        "filename": f"tunnel-{DONE_HUB}.log",
        "size": "4.0K",
        "modified": "2026-01-25 12:00:00",
    },
)
LOG = response(
    "log lines",
    {
        "status": "success",
        "tunnel_hash": DONE_HUB,
        "log": "=== 2026-01-25 12:00:00+0000 starting: autossh -M 0 -N … -L 127.0.0.1:33001:localhost:33000 -- "
        'cloud.usa2\nAuthenticated to cloud.usa2 ([203.0.113.7]:22) using "publickey".\n',
    },
)

# --- errors (the seed's "Error Responses"; messages as COMPAT.md words them) ---

PREFIX_TOO_SHORT = response("prefix too short", {"error": "Hash prefix too short (minimum 8 characters, got 4)"}, 400)
AMBIGUOUS_PREFIX = response(
    "ambiguous prefix",
    {
        "error": "Ambiguous hash prefix '7b840f83' matches 2 tunnels:\n  7b840f8344679dff5df893eefd245043\n"
        "  7b840f83abcdef1234567890abcdef12\nPlease use more characters to uniquely identify the tunnel."
    },
    400,
)
NO_MATCH = response("no match", {"error": "No tunnel found with hash prefix: 7b840f83"}, 404)
LOG_NOT_FOUND = response("no log yet", {"error": f"Log file not found for tunnel: {DONE_HUB}"}, 404)
MISSING_FIELDS = response("missing fields", {"error": "Missing required fields: remote_host, remote_port"}, 400)
UNAUTHORIZED = response("unauthorized", {"error": "Unauthorized", "message": "Valid Bearer token required"}, 401)
METHOD_NOT_ALLOWED = response("wrong method", {"error": "Method not allowed"}, 405)
