"""tunnels.agent: the worker's ssh-agent, with a real ssh-agent and ssh-add."""

from __future__ import annotations

import os
import signal
import stat
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from tests.procs import wait_for
from tests.worker_fixtures import make_key
from tunnels import agent as agent_mod
from tunnels.agent import Agent, KeyUnusable

pytestmark = pytest.mark.django_db


def pids(handle: Agent) -> list[int]:
    return [proc.pid for proc in handle.processes()]


def test_ensure_loads_the_key_and_writes_only_its_public_half(owner, agent):
    key = make_key(owner)

    pub = agent.ensure(key)

    assert pub == agent_mod.pub_path(key) and pub.read_text().strip() == key.public_key
    assert agent.held() == {key.fingerprint}
    assert len(str(agent.socket)) < 108
    assert stat.S_IMODE(os.stat(agent.dir).st_mode) == 0o700


def test_ensure_of_a_loaded_key_runs_nothing(owner, agent, monkeypatch):
    key = make_key(owner)
    agent.ensure(key)

    def no_process(*args, **kwargs):
        raise AssertionError("a subprocess for a key already in the agent")

    monkeypatch.setattr(agent_mod.subprocess, "run", no_process)
    monkeypatch.setattr(agent_mod.subprocess, "Popen", no_process)
    assert agent.ensure(key) == agent_mod.pub_path(key)


def test_the_agent_runs_in_its_own_session_with_no_secret_in_argv_or_environment(owner, agent):
    key = make_key(owner)
    agent.ensure(key)
    (proc,) = agent.processes()

    assert os.getsid(proc.pid) == proc.pid  # its own session: a killed worker's group signal misses it
    assert proc.cmdline() == ["ssh-agent", "-D", "-a", str(agent.socket)]
    env = proc.environ()
    assert set(env) <= {"PATH", "TUNNELSITE_DATA_DIR", "TUNNELSITE_AGENT_NODE"}


def test_a_new_agent_object_reuses_the_running_agent_and_knows_its_keys(owner, agent):
    key = make_key(owner)
    agent.ensure(key)
    before = pids(agent)

    again = Agent(node=agent.node)  # what a restarted worker makes
    again.ensure(key)

    assert pids(again) == before and again.held() == {key.fingerprint}
    assert key.fingerprint in again.loaded


def test_a_stale_socket_is_replaced_by_a_new_agent(owner, agent):
    key = make_key(owner)
    agent.ensure(key)
    (old,) = pids(agent)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE)
    assert agent.socket.exists()  # SIGKILL leaves the socket file behind

    fresh = Agent(node=agent.node)
    fresh.sync([key])

    assert old not in pids(fresh) and fresh.held() == {key.fingerprint}


def test_sync_removes_keys_no_tunnel_needs_and_their_public_files(owner, other, agent):
    kept, dropped = make_key(owner), make_key(other)
    agent.ensure(kept)
    agent.ensure(dropped)

    Agent(node=agent.node).sync([kept])  # a restarted worker, which learnt the keys from ssh-add -l

    assert agent.held() == {kept.fingerprint}
    # Public files are shared by the nodes of a data dir: only a deleted key's goes.
    dropped_pub = agent_mod.pub_path(dropped)
    assert dropped_pub.exists() and agent_mod.pub_path(kept).exists()
    dropped.delete()
    agent.sync([kept])
    assert not dropped_pub.exists() and agent_mod.pub_path(kept).exists()


def test_sync_with_nothing_needed_starts_no_agent(agent):
    agent.sync([])
    assert pids(agent) == [] and not agent.socket.exists()


def test_expired_and_undecryptable_keys_are_refused_with_a_reason(owner, agent):
    expired = make_key(owner, "old", expires_at=timezone.now() - timedelta(days=1))
    broken = make_key(owner, "broken", private_key_encrypted="not-a-fernet-token")

    with pytest.raises(KeyUnusable, match="'old' expired"):
        agent.ensure(expired)
    with pytest.raises(KeyUnusable, match="'broken' cannot be used"):
        agent.ensure(broken)
    assert not agent.held()


def test_stop_kills_the_agent_and_removes_its_socket(owner, agent):
    agent.ensure(make_key(owner))
    (pid,) = pids(agent)

    agent.stop()

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not agent.socket.exists() and not agent.dir.exists()
