"""The askpass broker: the worker's end of the helper ssh runs for each prompt (tunnels.ssh.askpass).

One Unix socket (0600) per worker node in the 0700 runtime dir (tunnels.ssh.master.runtime_dir).
Each login attempt the worker starts is registered here under a fresh nonce; a helper's connection
is served in a thread of its own (tunnels.worker.prompting): its peer must descend from the master
of that nonce, its question is recorded for the user (tunnels.prompts.ask) and the answer handed to
it once. What an attempt came to (a prompt nobody answered) stays here for the reconciler to read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connections

from tunnels.ssh.master import ensure_private, runtime_dir

logger = logging.getLogger("tunnelsite.worker")

BACKLOG = 64


@dataclass
class Attempt:
    """One login of an interactive tunnel: the master the worker started for it, and its progress."""

    tunnel_id: int
    attempt: str  # tunnels.prompts' attempt id (AuthPrompt.attempt)
    nonce: str  # the helper's proof of which attempt it serves (in the master's environment)
    pid: int | None = None  # the ssh master, once spawned
    create_time: float | None = None
    waiting: bool = False  # a question waits for the user's answer
    prompt: str = ""  # the question asked last
    last_event: float = field(default_factory=time.monotonic)  # a question asked or answered
    outcome: str | None = None  # why the login ended early ("login timed out: ...")
    over: threading.Event = field(default_factory=threading.Event)  # forgotten: stop waiting


def socket_path(data_dir: Path | str | None = None, node: str = "") -> Path:
    digest = hashlib.sha256(node.encode()).hexdigest()[:12]
    return runtime_dir(data_dir) / f"askpass-{digest}.sock"


class Broker:
    """The listening socket, the attempts by nonce, and a thread per helper connection."""

    def __init__(self, node: str = "", data_dir: Path | str | None = None) -> None:
        self.path = socket_path(data_dir, node)
        self.attempts: dict[str, Attempt] = {}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # --- the socket ------------------------------------------------------

    def start(self) -> Broker:
        if self._sock is not None:
            return self
        ensure_private(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a dead worker's socket (the dir is ours and private)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(BACKLOG)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="askpass-broker", daemon=True)
        self._thread.start()
        logger.info("askpass broker listening")
        return self

    def _accept(self) -> None:
        sock = self._sock  # close() clears the attribute; this thread keeps its own reference
        while not self._closing and sock is not None:
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._closing:
                    return
                time.sleep(0.1)  # e.g. out of file descriptors: try again, never spin
                continue
            threading.Thread(target=self._serve, args=(conn,), name="askpass-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from tunnels.worker import prompting

        try:
            prompting.serve(self, conn)
        except Exception:
            logger.exception("askpass broker: a helper's request failed")
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            connections.close_all()  # this thread's database connections only

    def close(self) -> None:
        self._closing = True
        with self._lock:
            for attempt in self.attempts.values():
                attempt.over.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # --- attempts ----------------------------------------------------------

    def register(self, tunnel_id: int, attempt: str) -> Attempt:
        """A new attempt of ``tunnel_id`` (before its master is spawned: a helper may call at once)."""
        item = Attempt(tunnel_id=tunnel_id, attempt=attempt, nonce=secrets.token_hex(16))
        with self._lock:
            self.attempts[item.nonce] = item
        return item

    def spawned(self, nonce: str, pid: int, create_time: float | None) -> None:
        with self._lock:
            item = self.attempts.get(nonce)
            if item is not None:
                item.pid, item.create_time = pid, create_time

    def get(self, nonce: str) -> Attempt | None:
        with self._lock:
            for key, item in self.attempts.items():
                if secrets.compare_digest(key, nonce):
                    return item
        return None

    def forget(self, nonce: str | None) -> Attempt | None:
        """The attempt is over: a helper still waiting is refused."""
        if not nonce:
            return None
        with self._lock:
            item = self.attempts.pop(nonce, None)
        if item is not None:
            item.over.set()
        return item
