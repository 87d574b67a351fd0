"""The askpass helper ssh runs for each prompt of an interactive tunnel's login.

ssh (``SSH_ASKPASS_REQUIRE=force``) runs it with the prompt text as its argument. It asks the
worker's broker (a 0600 Unix socket, ``tunnels.worker.askpass``) over the socket named in its
environment, with the attempt's nonce, and prints the answer the broker gives with a newline
(exit 0), or prints nothing and exits 1 when refused or when the worker goes away. It never asks
confirmations (``SSH_ASKPASS_PROMPT=confirm``, e.g. a host key's yes/no): host keys are decided by
the owner's known_hosts, never by a person through askpass. Standard library only, run isolated
(``python -I``) by the worker's own interpreter; installed per content hash by ``install``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

from django.conf import settings

SOCKET_ENV = "TUNNELSITE_ASKPASS_SOCKET"
NONCE_ENV = "TUNNELSITE_ASKPASS_NONCE"
# The most one reply may hold (an answer is at most tunnels.prompts.MAX_ANSWER characters).
MAX_REPLY = 65536

_BODY = """
import json
import os
import socket
import sys


def main():
    # A confirmation (host key yes/no) or a notice is never put to a person through here.
    if os.environ.get("SSH_ASKPASS_PROMPT", "") in ("confirm", "none"):
        return 1
    path = os.environ.get("{socket_env}", "")
    nonce = os.environ.get("{nonce_env}", "")
    if not path or not nonce:
        return 1
    prompt = sys.argv[1] if len(sys.argv) > 1 else ""
    request = json.dumps({{"nonce": nonce, "prompt": prompt}}).encode() + b"\\n"
    data = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(request)
            while not data.endswith(b"\\n") and len(data) <= {max_reply}:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 1
    try:
        reply = json.loads(data)
    except ValueError:
        return 1
    answer = reply.get("answer") if isinstance(reply, dict) else None
    if not isinstance(answer, str):
        return 1
    sys.stdout.write(answer + "\\n")
    sys.stdout.flush()
    return 0


sys.exit(main())
"""


def script_text(python: str | None = None) -> str:
    """The helper's source, with a shebang to ``python`` (this interpreter) in isolated mode."""
    body = _BODY.format(socket_env=SOCKET_ENV, nonce_env=NONCE_ENV, max_reply=MAX_REPLY)
    return f"#!{python or sys.executable} -I\n# tunnelsite askpass helper (tunnels.ssh.askpass): do not edit\n{body}"


def run_dir(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir or settings.DATA_DIR) / "run"


def install(data_dir: Path | str | None = None) -> Path:
    """Write the helper to ``<data dir>/run/askpass-<hash of its content>`` (0700) unless it is there;
    returns its path. A new version gets a new name, so a running ssh never sees its helper change."""
    text = script_text()
    directory = run_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"askpass-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text and os.access(path, os.X_OK):
            return path
    temporary = directory / f".{path.name}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o700)
    os.replace(temporary, path)
    return path
