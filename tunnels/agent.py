"""The worker's ssh-agent: the only place a private key exists in plaintext outside the database.

One ``ssh-agent -D -a <socket>`` per (data dir, node) runs in a session of
its own, so it outlives a killed or restarted worker: adopted tunnels (and
the ssh that autossh starts again when a connection drops) keep
authenticating through it, and the next worker finds it at the same socket
path and reuses it.

Keys go in with ``ssh-add -`` reading the decrypted key from its stdin; the
environment of ``ssh-add`` holds the socket path and nothing else, and no key
material is ever in an argv, an environment or a file. ssh finds the key in
the agent through its public half, written to ``<DATA_DIR>/ssh/pub/<key
id>.pub`` (``IdentityFile`` with ``IdentitiesOnly=yes``, so one tunnel can
only ever offer its own key although the agent holds everybody's).

Layout::

    <runtime>/                 0700, /tmp/tunnelsite-<hash of data dir and node>
                               (or $XDG_RUNTIME_DIR/tunnelsite-<hash>): short,
                               so the socket path stays under the 108-byte limit
    <runtime>/agent.sock       the agent's socket
    <DATA_DIR>/ssh/pub/*.pub   public halves, not secret

``ensure(key)`` is O(1) (no subprocess, no file system call) for a key the
agent already holds; ``sync(keys)`` at the periodic resync reloads what a
restarted agent lost and removes keys no tunnel of this node needs any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from django.conf import settings
from django.utils import timezone

from tunnels import sshkeys
from tunnels.models import SshKey
from tunnels.ssh import DATA_DIR_ENV
from tunnelsite.files import atomic_write

logger = logging.getLogger("tunnelsite.worker")

AGENT_NODE_ENV = "TUNNELSITE_AGENT_NODE"
SOCKET_NAME = "agent.sock"
SSH_AGENT = "ssh-agent"
SSH_ADD = "ssh-add"
COMMAND_TIMEOUT = 10.0
START_TIMEOUT = 5.0
# ssh-add -l: 0 = keys listed, 1 = the agent holds none, 2 = no agent answers.
LIST_OK = (0, 1)


class KeyUnusable(Exception):
    """A key cannot be put in the agent; the message is safe to show its owner."""


class AgentError(Exception):
    """The agent could not be started or reached."""


def runtime_dir(data_dir: Path | str | None = None, node: str = "") -> Path:
    """The 0700 directory of the agent socket: deterministic, so a restarted worker finds it again."""
    data_dir = str(data_dir or settings.DATA_DIR)
    digest = hashlib.sha256(f"{data_dir}\0{node}".encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"  # noqa: S108 - a private 0700 dir, checked below
    return Path(base) / f"tunnelsite-{digest}"


def pub_dir(data_dir: Path | str | None = None) -> Path:
    return Path(data_dir or settings.DATA_DIR) / "ssh" / "pub"


def pub_path(key: SshKey, data_dir: Path | str | None = None) -> Path:
    """The file ssh names as IdentityFile for ``key`` (its public half only)."""
    return pub_dir(data_dir) / f"{key.pk}.pub"


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700, or make sure an existing one is ours, a real directory and private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=False)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise AgentError(f"{path} is not a directory of this user; refusing to put the agent there")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _lifetime(expires_at: datetime | None) -> int | None:
    """Seconds the agent may keep a key that expires (ssh-add -t), None for no expiry."""
    if expires_at is None:
        return None
    return max(1, int((expires_at - timezone.now()).total_seconds()))


@dataclass
class Agent:
    """This node's ssh-agent. ``socket`` is what tunnels name as IdentityAgent."""

    data_dir: Path = field(default_factory=lambda: Path(settings.DATA_DIR))
    node: str = ""
    loaded: dict[str, str] = field(default_factory=dict)  # fingerprint -> key id, as the agent holds them
    _checked: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.dir = runtime_dir(self.data_dir, self.node)
        self.socket = self.dir / SOCKET_NAME

    # --- the agent process -------------------------------------------------

    def _env(self) -> dict[str, str]:
        # ssh-add needs the socket and nothing else: no key, no secret, no database URL.
        return {"SSH_AUTH_SOCK": str(self.socket), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def _ssh_add(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SSH_ADD, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self._env(),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def held(self) -> set[str] | None:
        """Fingerprints the agent holds, or None when no agent answers at the socket."""
        if not self.socket.exists():
            return None
        try:
            done = self._ssh_add("-l", "-E", "sha256")
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode not in LIST_OK:
            return None
        return {line.split()[1] for line in done.stdout.decode(errors="replace").splitlines() if " SHA256:" in line}

    def start(self) -> None:
        """Reuse the agent at the socket if one answers (a restarted worker), else start one there."""
        held = self.held()
        if held is not None:
            self._remember(held)
            self._checked = True
            return
        _private_dir(self.dir)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # stale: its agent is gone
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # Marks the process as this data dir's agent, so fixtures and --stop-on-exit find it by PID.
            DATA_DIR_ENV: str(self.data_dir),
            AGENT_NODE_ENV: self.node,
        }
        subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [SSH_AGENT, "-D", "-a", str(self.socket)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,  # outlives the worker; never in a tunnel's or the worker's group
            close_fds=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self.held() is None:
            if time.monotonic() > deadline:
                raise AgentError("ssh-agent did not start")
            time.sleep(0.02)
        self.loaded = {}
        self._checked = True
        logger.info("started ssh-agent for node %s", self.node or "(default)")

    def _remember(self, held: set[str]) -> None:
        self.loaded = {fp: self.loaded.get(fp, "") for fp in held}

    def processes(self) -> list[psutil.Process]:
        return agent_processes(self.data_dir, self.node)

    def stop(self) -> None:
        """Kill this node's agent (--stop-on-exit): every key it held is gone with it."""
        kill_agents(self.data_dir, self.node)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()
        self.loaded = {}
        self._checked = False

    # --- keys ----------------------------------------------------------------

    def ensure(self, key: SshKey) -> Path:
        """Make sure ``key`` is in the agent; returns its public file (the IdentityFile).

        No subprocess and no file system call when the key is already loaded.
        Raises ``KeyUnusable`` (expired, or it cannot be decrypted) and ``AgentError``.
        """
        if key.fingerprint in self.loaded:
            return pub_path(key, self.data_dir)
        if key.is_expired():
            raise KeyUnusable(f"SSH key {key.name!r} expired on {key.expires_at:%Y-%m-%d %H:%M %Z}")
        if not self._checked:
            self.start()
            if key.fingerprint in self.loaded:
                self._write_pub(key)
                self.loaded[key.fingerprint] = str(key.pk)
                return pub_path(key, self.data_dir)
        self._load(key)
        return pub_path(key, self.data_dir)

    def _load(self, key: SshKey) -> None:
        try:
            private = sshkeys.private_key_of(key)
        except sshkeys.KeyUnavailable as exc:
            raise KeyUnusable(f"SSH key {key.name!r} cannot be used: {exc}") from None
        args = ["-q"]
        lifetime = _lifetime(key.expires_at)
        if lifetime is not None:
            args += ["-t", str(lifetime)]  # the agent forgets it when it expires
        done = self._ssh_add(*args, "-", stdin=private)
        del private
        if done.returncode != 0 and self.held() is None:
            self.start()  # the agent died under us: one fresh try
            done = self._ssh_add(*args, "-", stdin=sshkeys.private_key_of(key))
        if done.returncode != 0:
            raise KeyUnusable(f"SSH key {key.name!r} could not be loaded into the agent")
        self._write_pub(key)
        self.loaded[key.fingerprint] = str(key.pk)
        logger.info("loaded SSH key %s (%s) into the agent", key.pk, key.fingerprint)

    def _write_pub(self, key: SshKey) -> None:
        path = pub_path(key, self.data_dir)
        text = key.public_key.strip() + "\n"
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == text:
                return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, text.encode(), mode=0o644)  # the public half only

    def sync(self, needed: Iterable[SshKey]) -> None:
        """The periodic resync: reload what a restarted agent lost, remove keys nobody here needs.

        Starts no agent when no key is needed and none runs.
        """
        wanted = {key.fingerprint: key for key in needed}
        held = self.held()
        if held is None:
            if not wanted:
                self.loaded = {}
                self._checked = False
                return
            self.start()
            held = set(self.loaded)
        self._remember(held)
        self._checked = True
        for fingerprint in held - set(wanted):
            self._remove(fingerprint)
        for fingerprint, key in wanted.items():
            if fingerprint not in self.loaded:
                try:
                    self._load(key)
                except (KeyUnusable, AgentError) as exc:
                    logger.info("resync: %s", exc)
        self._prune_pub_files(wanted.values())

    def _remove(self, fingerprint: str) -> None:
        key_id = self.loaded.pop(fingerprint, "")
        pub = pub_dir(self.data_dir) / f"{key_id}.pub" if key_id else None
        if pub is None or not pub.exists():
            # Held since before this worker started: find its public half among the files.
            pub = next((p for p in pub_dir(self.data_dir).glob("*.pub") if _fingerprint_of(p) == fingerprint), None)
        if pub is None:
            # No public half left anywhere: only dropping every key removes it; the needed ones come back.
            self._ssh_add("-D")
            self.loaded = {}
            return
        self._ssh_add("-d", str(pub))
        logger.info("removed SSH key %s from the agent", fingerprint)

    def _prune_pub_files(self, keep: Iterable[SshKey]) -> None:
        """Remove public files of deleted keys (other nodes sharing the data dir may still use the rest)."""
        directory = pub_dir(self.data_dir)
        if not directory.is_dir():
            return
        names = {f"{key.pk}.pub" for key in keep}
        others = {path.stem: path for path in directory.glob("*.pub") if path.name not in names}
        if not others:
            return
        ids = []
        for stem in others:
            with contextlib.suppress(ValueError):
                ids.append(uuid.UUID(stem))
        existing = {str(pk) for pk in SshKey.objects.filter(pk__in=ids).values_list("pk", flat=True)}
        for stem, path in others.items():
            if stem not in existing:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _fingerprint_of(path: Path) -> str:
    try:
        return sshkeys.fingerprint(path.read_text().strip())
    except (OSError, ValueError, IndexError):
        return ""


def agent_processes(data_dir: Path | str, node: str | None = None) -> list[psutil.Process]:
    """ssh-agent processes started for ``data_dir`` (and ``node`` unless None), found by their marker."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != SSH_AGENT:
            continue
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get(DATA_DIR_ENV) == str(data_dir) and (node is None or env.get(AGENT_NODE_ENV) == node):
            found.append(proc)
    return found


def kill_agents(data_dir: Path | str, node: str | None = None) -> None:
    """SIGTERM (then SIGKILL) the agents of ``data_dir``, by PID; reap our children; remove their sockets."""
    procs = agent_processes(data_dir, node)
    sockets = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            argv = proc.cmdline()
            if "-a" in argv[:-1]:
                sockets.append(Path(argv[argv.index("-a") + 1]))
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=3)
    for proc in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.unlink()
        with contextlib.suppress(OSError):
            sock.parent.rmdir()
