"""Starting, finding and stopping tunnel processes (used by the worker only).

A tunnel runs as ``autossh`` (which runs ``ssh``) in a session of its own, so
the pair is one process group; an interactive tunnel runs as one ``ssh`` control
master (marked ``TUNNELSITE_TUNNEL_KIND=master``, found and adopted like autossh).
Processes carry the tunnel's uuid and the data
dir in their environment; ``Scanner.scan`` finds them again with one psutil
pass, and (pid, create time) pairs make sure a recycled PID is never taken for
a tunnel. Split by role: ``scan``, ``launch``, ``stopping``, ``reaping``, ``sockets``.
"""

from tunnels.processes.launch import read_log, start, tail
from tunnels.processes.reaping import become_subreaper, reap, reap_orphans, reap_zombie_tunnels
from tunnels.processes.scan import TUNNEL_NAMES, Found, Marker, Scanner
from tunnels.processes.sockets import children, holds_listener, listening_on, listening_sockets, socket_inodes
from tunnels.processes.stopping import (
    STOP_GRACE,
    Group,
    await_groups,
    create_time,
    same_process,
    stop_group,
    stop_groups,
    terminate_groups,
)

__all__ = [
    "STOP_GRACE",
    "TUNNEL_NAMES",
    "Found",
    "Group",
    "Marker",
    "Scanner",
    "await_groups",
    "become_subreaper",
    "children",
    "create_time",
    "holds_listener",
    "listening_on",
    "listening_sockets",
    "reap",
    "reap_orphans",
    "reap_zombie_tunnels",
    "read_log",
    "same_process",
    "socket_inodes",
    "start",
    "stop_group",
    "stop_groups",
    "tail",
    "terminate_groups",
]
