"""Outages of one SSH server: probe it cheaply and retry its tunnels the moment it answers.

While a server is down, every tunnel to it fails the same way; growing each tunnel's
back-off (to a minute) would keep them down long after the server returned. Instead
the worker probes each such server with one TCP connect per step (``PROBE_SECONDS``),
shared by all of its tunnels, and retries them all at once when it answers.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time

from tunnels.models import Tunnel

logger = logging.getLogger("tunnelsite.worker")

# One TCP connect per down server this often; a connect not answered within PROBE_TIMEOUT counts as down.
PROBE_SECONDS = 1.0
PROBE_TIMEOUT = 0.3
# The reasons (tunnels.worker.health.FAILURES words) that mean "the server did not answer or dropped us".
# ("closed the connection" is not one: a server that answers and then hangs up must not be retried every probe.)
SERVER_DOWN = ("connection refused", "connection timed out", "host unreachable", "the connection to")


def server_of(tunnel: Tunnel) -> tuple[str, int]:
    return tunnel.remote_host.rsplit("@", 1)[-1], int(tunnel.ssh_port or 22)


def server_down(reason: str) -> bool:
    """True when ``reason`` says the tunnel's server was unreachable (not something the owner must fix)."""
    text = reason.removeprefix("reconnecting: ")
    return text.startswith(SERVER_DOWN)


class Probes:
    """The answer of each probed server, refreshed at most once per ``PROBE_SECONDS``."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, int], tuple[float, bool]] = {}
        self._down_at: dict[tuple[str, int], float] = {}  # the last probe a server did not answer
        self._failed_at: dict[str, float] = {}  # tunnel uuid -> its last failure for want of its server

    def answers(self, tunnel: Tunnel) -> bool:
        server = server_of(tunnel)
        now = time.monotonic()
        probed = self._answers.get(server)
        if probed is None or now - probed[0] >= PROBE_SECONDS:
            answered = connects(*server)
            if probed is not None and probed[1] != answered:
                logger.info("server %s:%s %s", *server, "answers again" if answered else "does not answer")
            if not answered:
                self._down_at[server] = now
            probed = self._answers[server] = (now, answered)
        return probed[1]

    def failed(self, tunnel: Tunnel) -> None:
        """``tunnel`` just failed because its server was unreachable."""
        self._failed_at[str(tunnel.uuid)] = time.monotonic()

    def returned(self, tunnel: Tunnel) -> bool:
        """True when ``tunnel``'s server was seen down after the tunnel failed and answers now.

        (Seen down first: a server that answers TCP but still fails ssh is not retried every probe.)
        """
        failed = self._failed_at.get(str(tunnel.uuid), 0.0)
        if not self.answers(tunnel):
            return False
        return self._down_at.get(server_of(tunnel), -1.0) > failed

    def forget(self, tunnel: Tunnel) -> None:
        """``tunnel`` runs again: its failure no longer waits for its server."""
        self._failed_at.pop(str(tunnel.uuid), None)


def connects(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """One non-blocking TCP connect: True if ``host:port`` accepts within ``timeout``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            return False
        # poll, not select: a worker with a thousand tunnels holds fds past select's limit of 1024.
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        ready = poller.poll(timeout * 1000)
        return bool(ready) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
