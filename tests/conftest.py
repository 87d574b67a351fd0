"""Shared fixtures: users (owner / other / staff), tokens, a data dir per test,
and a real sshd on loopback for end-to-end tests."""

from __future__ import annotations

import os
import shutil

import pytest
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import DEFAULT_SCOPES
from tests import sshd as sshd_mod

pytest_plugins = ["tests.worker_fixtures", "tests.browser"]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Each test gets its own data dir (backups, logs, keys).

    An in-process ``Reconciler`` starts the data dir's ssh-agent, which outlives
    it by design (running tunnels need it): stop it, by PID, whatever the outcome.
    Its runtime dir of sockets (outside the data dir, for sun_path's 108 bytes) goes too.
    """
    from tunnels.agent import kill_agents
    from tunnels.ssh.master import runtime_dir

    path = tmp_path / "data"
    path.mkdir()
    settings.DATA_DIR = path
    yield path
    kill_agents(path)
    shutil.rmtree(runtime_dir(path), ignore_errors=True)


@pytest.fixture(autouse=True)
def _loopback_network_grants(request, settings):
    """The test sshds and -R targets listen on loopback, which the network policy denies by default:
    tests allow it as an operator with such servers would (README "Security model"). Tests marked
    ``real_network_policy`` run on the real defaults (the workers they start get the same settings)."""
    if request.node.get_closest_marker("real_network_policy") is None:
        settings.SSH_DESTINATIONS_ALLOW = ["127.0.0.0/8"]
        settings.ALLOWED_TARGETS = ["127.0.0.0/8:1024-65535"]


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_local_cache():
    """The per-process cache holds request throttle counts; user ids repeat across tests."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def other(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("carol", password="carol-pass-123", is_staff=True)


def client_for(user, scopes: list[str] | None = None) -> APIClient:
    """An API client sending a fresh token of ``user`` as ``Bearer``."""
    _, raw = tokens.mint(user, label="test", scopes=list(DEFAULT_SCOPES) if scopes is None else scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_token = raw
    return client


@pytest.fixture
def owner_client(owner):
    return client_for(owner)


@pytest.fixture
def other_client(other):
    return client_for(other)


@pytest.fixture
def staff_client(staff):
    return client_for(staff, ["read", "operate", "write", "admin"])


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port> accepting ``client_key`` for the current user."""
    with sshd_mod.running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


# Fixtures that reach the database (pytest-django's, and ours built on them, resolve to one of these).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}
# Fixtures of tests that run real processes, servers or committed data that other processes read.
PROCESS_FIXTURES = {"transactional_db", "live_server", "sshd", "worker_factory", "worker", "target_server", "page_for"}


def _uses_database(item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(DATABASE_FIXTURES & set(item.fixturenames))


def _in_process(item) -> bool:
    """A test that lives inside one transaction of this process (rolled back at its end) and starts no
    server: any number of them can run side by side (bin/test runs them on every core, pytest-xdist)."""
    marker = item.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or item.get_closest_marker("e2e"):
        return False
    return not (PROCESS_FIXTURES & set(item.fixturenames))


# Files whose process tests check what ssh, the network or the processes do (connection tests, host keys,
# network and port isolation) and use the database only to hold a tunnel: CI's PostgreSQL pass leaves
# those tests to the SQLite pass (their in-process tests still run there). The worker's own database
# work on PostgreSQL (claims, wakes, sessions, failover, interactive logins, the fault rows of
# test_worker_faults) is tested by the test_worker_* and test_interactive_* files and the API and
# compat e2e tests, which run in both passes.
PROCESS_BEHAVIOUR_FILES = {
    "test_preflight_e2e.py",
    "test_hostkeys_e2e.py",
    "test_isolation_e2e.py",
    "test_isolation_network.py",
    "test_isolation_logs.py",
    "test_isolation_port_clash.py",
    "test_isolation_remote_listen.py",
}


def _process_behaviour(item) -> bool:
    return item.path.name in PROCESS_BEHAVIOUR_FILES and not _in_process(item)


def pytest_collection_modifyitems(config, items):
    """Mark the in-process tests (``-m in_process`` selects them, for a parallel run).

    CI runs the suite twice, on SQLite and then with DATABASE_URL on PostgreSQL. A test that never
    reaches the database gives the same answer both times: the second pass runs only those that do."""
    for item in items:
        if _in_process(item):
            item.add_marker("in_process")
    if not os.environ.get("DATABASE_URL"):
        return
    keep, drop = [], []
    for item in items:
        (keep if _uses_database(item) and not _process_behaviour(item) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
