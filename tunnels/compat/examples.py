"""OpenAPI examples of the compat API, from the autossh manager's API document (seed 001).

Names, hosts and ports are the seed's reserved ``example.com`` ones (never a real
host: pressing "Execute" in Swagger must not reach someone else's server). Hashes are what tunnelsite computes for
those fields (``tunnels.hashing.compat_hash``): the seed's printed ones cannot be
reproduced (COMPAT.md). Bodies the seed leaves out come from COMPAT.md "Shapes";
``output`` and ``log`` are tunnelsite's own text. ``tests/test_schema.py`` checks
every example against its documented schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample

MY_TUNNEL = "df9088e31f24d5fcd80da7d01a648030"
TUNNEL_1_INTERACTIVE = "03fd80980d5cb9fdf415e0e8fb047ca9"  # tunnel-1 of CONFIG_REPLACE, interactive
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


def _list_item(status: str) -> dict:
    return {
        "name": "my-tunnel",
        "status": status,
        "local_port": "18080",
        "remote_host": "user@server.example.com",
        "remote_port": "8080",
        "hash": MY_TUNNEL,
    }


LIST = response("configured tunnel", _list_item("NORMAL"))
STATUS = response("running tunnel", _list_item("RUNNING"))

# --- start / stop -------------------------------------------------------

START = response(
    "started",
    {
        "status": "success",
        "tunnel_hash": MY_TUNNEL,
        "output": f"Starting tunnel: my-tunnel ({MY_TUNNEL})\nstarted, pid 4242",
    },
)
STOP = response(
    "stopped",
    {"status": "success", "tunnel_hash": MY_TUNNEL, "output": f"Stopping tunnel: my-tunnel ({MY_TUNNEL})\nstopped"},
)

START_ALL = response(
    "two started, one skipped",
    {
        "status": "success",
        "output": f"Starting 2 tunnel(s)\nmy-tunnel ({MY_TUNNEL}): started, pid 4242\n"
        f"another-tunnel ({ANOTHER_TUNNEL}): failed: connection refused\n"
        f"skipped (interactive, needs interactive authentication): tunnel-1 ({TUNNEL_1_INTERACTIVE})",
    },
)
STOP_ALL = response(
    "stopped",
    {"status": "success", "output": f"Stopping 1 tunnel(s)\nmy-tunnel ({MY_TUNNEL}): stopped"},
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
    request("update a tunnel", {"hash": MY_TUNNEL, **UPDATED}),
    response("added", {"status": "success", "action": "added", "hash": MY_NEW_TUNNEL}, 201),
    response("updated", {"status": "success", "action": "updated", "old_hash": MY_TUNNEL, "new_hash": UPDATED_TUNNEL}),
]
DELETE = response("deleted", {"status": "success", "action": "deleted", "hash": MY_TUNNEL})
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
        "hash": MY_TUNNEL,
        "filename": f"tunnel-{MY_TUNNEL}.log",
        "size": "4.0K",
        "modified": "2026-01-25 12:00:00",
    },
)
LOG = response(
    "log lines",
    {
        "status": "success",
        "tunnel_hash": MY_TUNNEL,
        "log": "=== 2026-01-25 12:00:00+0000 starting: autossh -M 0 -N … -L 127.0.0.1:18080:localhost:8080 -- "
        'user@server.example.com\nAuthenticated to server.example.com ([192.0.2.10]:22) using "publickey".\n',
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
LOG_NOT_FOUND = response("no log yet", {"error": f"Log file not found for tunnel: {MY_TUNNEL}"}, 404)
MISSING_FIELDS = response("missing fields", {"error": "Missing required fields: remote_host, remote_port"}, 400)
UNAUTHORIZED = response("unauthorized", {"error": "Unauthorized", "message": "Valid Bearer token required"}, 401)
METHOD_NOT_ALLOWED = response("wrong method", {"error": "Method not allowed"}, 405)
