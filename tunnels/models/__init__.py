"""The tunnels domain models, split by role; import them from here."""

from tunnels.models.history import ConfigBackup, ExitReason, JSONArrayLength, TunnelSession
from tunnels.models.identity import HostKeyState, KnownHost, SshKey
from tunnels.models.interactive import AuthPrompt
from tunnels.models.preflight import ConnectionTest, TestState
from tunnels.models.tunnel import (
    DIRECTION_CHOICES,
    DIRECTIONS,
    LOCAL_TO_REMOTE,
    REMOTE_TO_LOCAL,
    Desired,
    Status,
    Tunnel,
    TunnelQuerySet,
    claimed_port,
    host_port,
    listen_address,
)
from tunnels.models.worker import ChangeMarker, WorkerNode

__all__ = [
    "DIRECTIONS",
    "DIRECTION_CHOICES",
    "LOCAL_TO_REMOTE",
    "REMOTE_TO_LOCAL",
    "AuthPrompt",
    "ChangeMarker",
    "ConfigBackup",
    "ConnectionTest",
    "Desired",
    "ExitReason",
    "HostKeyState",
    "JSONArrayLength",
    "KnownHost",
    "SshKey",
    "Status",
    "TestState",
    "Tunnel",
    "TunnelQuerySet",
    "TunnelSession",
    "WorkerNode",
    "claimed_port",
    "host_port",
    "listen_address",
]
