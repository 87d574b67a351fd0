"""A small SSH server that asks two questions: a password, then a one-time code (tests only).

Real two-factor servers (sshd with a PAM stack such as google-authenticator) ask for the password
and then "Verification code:". This stand-in does the same with asyncssh, so tests need no PAM
setup. asyncssh cannot answer a password login with RFC 4252 "partial success" (its server always
sends partial_success=false), so both questions are keyboard-interactive rounds of one login:
"Password:" first and, only when that is right, "Verification code:". A wrong answer at either
round fails the login, and the server offers no other method (no password, no public key).
To ssh each round is a separate prompt, exactly like a PAM server's.

It forwards ``-L`` (direct-tcpip) and ``-R`` (tcpip-forward) to and on loopback only.

It runs as its own process (``python -m tests.twofactor_server <config.json>``, spawned in its own
process group and killed by PID, see tests/procs.py). Its secrets reach it in a 0600 JSON file,
never in argv or the environment: the secret scans of tests/test_interactive_secrets.py read every
process's argv. It logs events (never an answer) to stdout, one line each, for tests to assert on.
It listens on a port the kernel picks and writes that port into a "ready" file once it accepts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PASSWORD_PROMPT = "Password:"
CODE_PROMPT = "Verification code:"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ROOT = Path(__file__).resolve().parent.parent


# --- the server process -----------------------------------------------------


def _log(line: str) -> None:
    print(line, flush=True)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _server_class(user: str, password: str, code: str):
    import asyncssh

    class TwoFactor(asyncssh.SSHServer):
        """One login: password round, then code round (keyboard-interactive)."""

        def connection_made(self, conn) -> None:
            self._stage = ""
            _log("connection")

        def begin_auth(self, username: str) -> bool:
            return True  # every user must authenticate

        def password_auth_supported(self) -> bool:
            return False

        def public_key_auth_supported(self) -> bool:
            return False

        def kbdint_auth_supported(self) -> bool:
            return True

        def get_kbdint_challenge(self, username: str, lang: str, submethods: str):
            self._stage = "password"
            _log("asked password")
            return ("", "", "", [(PASSWORD_PROMPT, False)])

        def validate_kbdint_response(self, username: str, responses: list[str]):
            stage, self._stage = self._stage, ""
            given = responses[0] if len(responses) == 1 else None
            if username != user:
                _log(f"login failed: unknown user {username!r}")
                return False
            if stage == "password":
                if given is None or not _same(given, password):
                    _log("login failed: wrong password")
                    return False
                self._stage = "code"
                _log("asked code")
                return ("", "", "", [(CODE_PROMPT, False)])
            if stage == "code" and given is not None and _same(given, code):
                _log(f"login ok: {username}")
                return True
            _log("login failed: wrong code")
            return False

        def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
            allowed = dest_host in LOOPBACK
            _log(f"forward -L to {dest_host}:{dest_port}: {'allowed' if allowed else 'refused'}")
            return allowed

        def server_requested(self, listen_host: str, listen_port: int) -> bool:
            allowed = listen_host in LOOPBACK
            _log(f"forward -R on {listen_host}:{listen_port}: {'allowed' if allowed else 'refused'}")
            return allowed

    return TwoFactor


async def _serve(config: dict) -> None:
    import asyncssh

    server_class = _server_class(config["user"], config["password"], config["code"])
    acceptor = await asyncssh.create_server(
        server_class,
        "127.0.0.1",
        0,
        server_host_keys=[config["host_key"]],
        login_timeout=config.get("login_timeout", 600),
        keepalive_interval=0,
    )
    port = acceptor.sockets[0].getsockname()[1]
    ready = Path(config["ready"])
    partial = ready.with_suffix(".tmp")
    partial.write_text(str(port))
    partial.rename(ready)  # whole or absent: the fixture never reads half a number
    _log(f"listening on 127.0.0.1:{port}")
    await acceptor.wait_closed()


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[1]).read_text())
    asyncio.run(_serve(config))
    return 0


# --- the fixture side -------------------------------------------------------------


@dataclass
class TwoFactorServer:
    host: str
    port: int
    user: str
    password: str
    code: str
    host_key_pub: Path
    proc: object
    log: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def known_host_line(self) -> str:
        """This server's host key as a known_hosts line (``[127.0.0.1]:<port> ssh-ed25519 AAAA…``)."""
        key_type, key = self.host_key_pub.read_text().split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key}"

    def events(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []


def new_password() -> str:
    """A password with characters that quoting, JSON and URL encoding would change."""
    return f"Pw-{secrets.token_hex(6)}!#%&'\" $x"


def new_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def start_twofactor(workdir: Path, user: str = "otp-user", password: str | None = None, code: str | None = None):
    from tests.procs import kill_group, spawn, wait_for
    from tests.sshd import keygen

    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "hostkey")  # a fresh key per run
    ready = workdir / "ready"
    config = {
        "user": user,
        "password": password or new_password(),
        "code": code or new_code(),
        "host_key": str(host_key),
        "ready": str(ready),
    }
    config_path = workdir / "server.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    log = workdir / "twofactor.log"
    proc = spawn([sys.executable, "-m", "tests.twofactor_server", str(config_path)], log, cwd=ROOT)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=20, message="two-factor server ready")
        if not ready.exists():
            raise AssertionError(f"two-factor server exited with {proc.returncode}: {log.read_text(errors='replace')}")
    except BaseException:
        kill_group(proc)
        raise
    port = int(ready.read_text())
    return TwoFactorServer(
        "127.0.0.1", port, user, config["password"], config["code"], workdir / "hostkey.pub", proc, log
    )


@contextmanager
def running_twofactor(workdir: Path, **kwargs) -> Iterator[TwoFactorServer]:
    """A started two-factor server, killed by its process group however the test ends."""
    from tests.procs import kill_group

    server = start_twofactor(workdir, **kwargs)
    try:
        yield server
    finally:
        kill_group(server.proc)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
