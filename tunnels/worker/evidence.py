"""Evidence: what ssh's log lines and a process's exit status say, in words a user understands.

Only the latest evidence counts: a failure followed by a success is history (autossh reconnected).
"""

from __future__ import annotations

import os
import re
import signal

from tunnels.models import Tunnel
from tunnels.ssh import redact

# Lines ssh writes when a tunnel cannot work, and what they mean for the user.
# The last field says whether only the user can fix it (status failed rather than backoff).
FAILURES: list[tuple[re.Pattern[str], str, bool]] = [
    (re.compile(r"address already in use", re.I), "address already in use: another program listens on {listen}", True),
    (re.compile(r"cannot listen to port"), "address already in use: ssh could not listen on {listen}", True),
    (
        re.compile(r"bind .*Permission denied"),
        "permission denied: not allowed to listen on {listen} (ports below 1024 need privileges)",
        True,
    ),
    (
        re.compile(r"Permission denied \((?P<methods>[^)]*)\)"),
        "permission denied ({methods}): the SSH server did not accept the tunnel's key",
        True,
    ),
    (
        re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "host key verification failed: the server's host key differs from the one remembered for it",
        True,
    ),
    (
        re.compile(r"remote port forwarding failed"),
        "remote port forwarding failed: the SSH server refused to listen on {listen} "
        "(port in use there, or forwarding not allowed)",
        True,
    ),
    (
        re.compile(r"ssh: connect to host .*Connection refused"),
        "connection refused: nothing accepts SSH connections at {server}",
        False,
    ),
    (re.compile(r"ssh: connect to host .*timed out"), "connection timed out: {server} did not answer", False),
    (re.compile(r"No route to host|Network is unreachable"), "host unreachable: no route to {server}", False),
    (
        re.compile(r"Could not resolve hostname"),
        "unknown host: the name of {server} could not be resolved",
        True,
    ),
    (
        re.compile(r"Connection (closed|reset) by|kex_exchange_identification"),
        "the SSH server at {server} closed the connection",
        False,
    ),
    (
        re.compile(r"Connection to \S+ closed by remote host|Timeout, server \S+ not responding"),
        "the connection to {server} dropped",
        False,
    ),
    (
        re.compile(r"Bad (local|remote) forwarding specification|Bad configuration option|command-line: line"),
        "ssh rejected the tunnel's configuration",
        True,
    ),
]


# A line that proves the connection got through: evidence written after it supersedes older failures.
SUCCESS = re.compile(r"Authenticated to ")
# The line the worker writes before each process it starts (tunnels.processes.start).
START_MARK = re.compile(r"^=== .* starting: ", re.M)


def explain(text: str, tunnel: Tunnel) -> tuple[str, bool] | None:
    """The latest failure in ``text`` in words a user understands (plus ssh's own line).

    Only the latest evidence counts: a failure followed by a success ("Authenticated to")
    is history (autossh reconnected), not a reason to act.
    """
    server = tunnel.remote_host.rsplit("@", 1)[-1] + (f":{tunnel.ssh_port}" if tunnel.ssh_port else "")
    for line in reversed(text.splitlines()):
        if SUCCESS.search(line):
            return None
        for pattern, message, needs_user in FAILURES:
            match = pattern.search(line)
            if match:
                words = message.format(listen=tunnel.listen, server=server, **match.groupdict())
                return f"{words} — ssh said: {redact(line.strip())[:300]}", needs_user
    return None


def authenticated_last(text: str) -> bool:
    """True when the latest evidence in ``text`` is a success (an -R forward's sign of life)."""
    for line in reversed(text.splitlines()):
        if SUCCESS.search(line):
            return True
        if any(pattern.search(line) for pattern, _, _ in FAILURES):
            return False
    return False


def since_last_start(text: str) -> str:
    """What the current process wrote: ``text`` after the worker's last "starting" line."""
    marks = list(START_MARK.finditer(text))
    if not marks:
        return text
    return text[text.find("\n", marks[-1].end()) + 1 :]


def describe_exit(status: int | None) -> str:
    """A raw wait status in words: "killed by SIGKILL", "exit status 1"."""
    if status is None:
        return "the process disappeared"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


def describe_returncode(code: int | None) -> str:
    """``Popen.returncode`` (negative for a signal) in the same words as ``describe_exit``."""
    if code is None:
        return describe_exit(None)
    return describe_exit(-code) if code < 0 else describe_exit(code << 8)
