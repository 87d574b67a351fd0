"""The worker's known_hosts cache (tunnels.worker.hostfiles): once per owner and pass, again when ssh appended."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import make_tunnel
from tests.test_hostkeys import KEY, OTHER, OTHER_TYPE, pin
from tunnels import hostkeys
from tunnels.models import HostKeyState, KnownHost
from tunnels.worker import hostfiles
from tunnels.worker.hostfiles import Every, HostFiles

pytestmark = pytest.mark.django_db


def queries(call) -> int:
    with CaptureQueriesContext(connection) as seen:
        call()
    return len(seen.captured_queries)


def test_an_owner_is_synchronised_once_per_pass(owner):
    pin(owner)
    files = HostFiles()
    assert queries(lambda: files.sync(owner.pk)) > 0
    assert queries(lambda: files.sync(owner.pk)) == 0  # the second start of the pass
    files.new_pass()
    assert queries(lambda: files.sync(owner.pk)) > 0


def test_a_change_in_the_database_reaches_the_file_at_the_next_pass(owner):
    row = pin(owner)
    files = HostFiles()
    files.sync(owner.pk)
    hostkeys.delete(row)  # in the web, between two passes
    files.new_pass()
    files.sync(owner.pk)
    assert "example.org" not in hostkeys.path_for(owner.pk).read_text()


def test_a_key_ssh_appended_is_harvested_within_the_pass(owner):
    pin(owner)
    files = HostFiles()
    files.sync(owner.pk)
    with open(hostkeys.path_for(owner.pk), "a") as handle:  # ssh's accept-new
        handle.write(f"[127.0.0.1]:2222 {OTHER_TYPE} {OTHER}\n")
    files.sync(owner.pk)
    row = KnownHost.objects.get(owner=owner, host="127.0.0.1")
    assert (row.key, row.state, row.source) == (OTHER, HostKeyState.TRUSTED, "tofu")


def test_a_tunnel_coming_up_harvests_only_a_changed_file_and_touches_once_a_minute(owner):
    tunnel = make_tunnel(owner, remote_host="example.org", ssh_port=22)
    pin(owner)
    files = HostFiles()
    files.sync(owner.pk)
    files.seen(tunnel)  # file unchanged: no harvest, one last_seen write
    assert KnownHost.objects.get(owner=owner, key=KEY).last_seen is not None
    assert queries(lambda: files.seen(tunnel)) == 0  # within the minute, nothing
    with open(hostkeys.path_for(owner.pk), "a") as handle:
        handle.write(f"[127.0.0.1]:2222 {OTHER_TYPE} {OTHER}\n")
    files.seen(tunnel)
    assert KnownHost.objects.filter(owner=owner, host="127.0.0.1", source="tofu").exists()


def test_every_lets_a_key_through_once_per_interval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(hostfiles.time, "monotonic", lambda: now[0])
    every = Every(60)
    assert every.due("a") and every.due("b")
    assert not every.due("a")
    now[0] += 60
    assert every.due("a")
