"""One helper's request to the askpass broker: who is asking, then the answer or a refusal.

A request is one JSON line ``{"nonce", "prompt"}``; the reply one line ``{"answer"}`` or
``{"error"}``. The asking process must run as the worker's user (SO_PEERCRED) and descend from
the ssh master the worker started for that nonce (its parent chain, pid and start time checked),
so neither another user nor another process of ours can ask for an answer. Answers given with the
start come back at once (tunnels.prompts.ask); otherwise the question waits for the user, polled
with ``take`` until ``settings.PROMPT_TIMEOUT``. Answers are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import time
from typing import TYPE_CHECKING

import psutil
from django.conf import settings

from tunnels import prompts

if TYPE_CHECKING:
    from tunnels.worker.askpass import Attempt, Broker

logger = logging.getLogger("tunnelsite.worker")

POLL_SECONDS = 0.2  # how often a waiting question looks for the user's answer
REQUEST_TIMEOUT = 5.0  # a helper sends its request at once
MAX_REQUEST = 8192
SPAWN_WAIT = 2.0  # a helper may ask before the worker recorded its master's pid
PARENT_HOPS = 2  # ssh runs the helper itself; one more level is allowed, no more


class Refused(Exception):
    """The request is not answered (the reason goes to the worker's log, never to the helper)."""


def serve(broker: Broker, conn: socket.socket) -> None:
    try:
        attempt, prompt = identify(broker, conn)
    except Refused as exc:
        logger.warning("askpass broker: refused a request: %s", exc)
        _reply(conn, {"error": "refused"})
        return
    conn.settimeout(None)  # blocking again: the hang-up check peeks without waiting
    answer = obtain(attempt, prompt, conn)
    _reply(conn, {"answer": answer} if answer is not None else {"error": "no answer"})


def identify(broker: Broker, conn: socket.socket) -> tuple[Attempt, str]:
    """The attempt a request belongs to and its prompt, or Refused."""
    pid, uid = peer_credentials(conn)
    if uid != os.geteuid():
        raise Refused(f"peer pid {pid} runs as uid {uid}")
    request = read_request(conn)
    attempt = broker.get(str(request.get("nonce", "")))
    if attempt is None:
        raise Refused(f"peer pid {pid}: unknown nonce")
    deadline = time.monotonic() + SPAWN_WAIT
    while attempt.pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if attempt.pid is None or not descends_from(pid, attempt.pid, attempt.create_time):
        raise Refused(f"peer pid {pid} is not run by the ssh master of tunnel {attempt.tunnel_id}")
    prompt = request.get("prompt", "")
    if not isinstance(prompt, str):
        raise Refused("prompt is not a string")
    return attempt, prompt.strip()[: prompts.MAX_PROMPT]


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def descends_from(pid: int, master: int, create_time: float | None, hops: int = PARENT_HOPS) -> bool:
    """True if ``master`` (still the process started at ``create_time``) is a parent of ``pid``
    within ``hops`` levels."""
    try:
        proc = psutil.Process(pid)
        for _ in range(hops):
            proc = proc.parent()
            if proc is None:
                return False
            if proc.pid == master:
                return create_time is None or abs(proc.create_time() - create_time) < 0.01
    except psutil.Error:
        return False
    return False


def read_request(conn: socket.socket) -> dict:
    conn.settimeout(REQUEST_TIMEOUT)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                raise Refused("request too long")
    except OSError as exc:
        raise Refused(f"request not read: {exc}") from None
    try:
        request = json.loads(data)
    except ValueError:
        raise Refused("request is not JSON") from None
    if not isinstance(request, dict):
        raise Refused("request is not an object")
    return request


def obtain(attempt: Attempt, prompt: str, conn: socket.socket | None = None, timeout: int | None = None) -> str | None:
    """The answer to ``prompt``: one given with the start, or the user's within ``timeout`` seconds."""
    timeout = settings.PROMPT_TIMEOUT if timeout is None else timeout
    attempt.last_event = time.monotonic()
    attempt.prompt = prompt
    answer = prompts.ask(attempt.tunnel_id, attempt.attempt, prompt, echo=False, timeout=timeout)
    if answer is not None:
        return answer
    attempt.waiting = True
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if attempt.over.wait(POLL_SECONDS) or (conn is not None and _gone(conn)):
                return None  # the attempt ended (stopped, the master died): nobody to answer
            answer = prompts.take(attempt.tunnel_id, attempt.attempt)
            if answer is not None:
                return answer
        attempt.outcome = f"login timed out: nobody answered '{prompt}' within {timeout} s"
        logger.info("tunnel %s: %s", attempt.tunnel_id, attempt.outcome)
        return None
    finally:
        attempt.waiting = False
        attempt.last_event = time.monotonic()


def _gone(conn: socket.socket) -> bool:
    """The helper hung up (its ssh was killed)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _reply(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the helper is gone: ssh fails its login, the reconciler sees it
