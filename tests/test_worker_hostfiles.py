"""The worker's known_hosts cache (tunnels.worker.hostfiles): once per owner between full passes, again when ssh
appended to the file; every change to the pinned keys moves the marker (which makes the next pass a full one)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import make_tunnel
from tests.test_hostkeys import KEY, OTHER, OTHER_TYPE, pin
from tunnels import hostkeys, services
from tunnels.models import HostKeyState, KnownHost
from tunnels.worker import hostfiles
from tunnels.worker.hostfiles import Every, HostFiles

pytestmark = pytest.mark.django_db


def queries(call) -> int:
    with CaptureQueriesContext(connection) as seen:
        call()
    return len(seen.captured_queries)


def test_an_owner_is_synchronised_once_between_full_passes(owner):
    pin(owner)
    files = HostFiles()
    assert queries(lambda: files.sync(owner.pk)) > 0
    assert queries(lambda: files.sync(owner.pk)) == 0  # the next start, in a busy pass
    files.forget()
    assert queries(lambda: files.sync(owner.pk)) > 0


@pytest.mark.parametrize("change", ["pin", "accept", "delete"])
def test_every_change_to_the_pinned_keys_moves_the_marker(owner, change):
    row = pin(owner)
    if change == "accept":
        KnownHost.objects.filter(pk=row.pk).update(
            state=HostKeyState.CHANGED, offered_key=OTHER, offered_fingerprint="SHA256:x"
        )
        row.refresh_from_db()
    before = services.marker_value()
    if change == "pin":
        hostkeys.create_from_keyscan(owner, f"[127.0.0.1]:2222 {OTHER_TYPE} {OTHER}")
    else:
        getattr(hostkeys, change)(row)
    assert services.marker_value() != before


def test_a_change_in_the_database_reaches_the_file_at_the_next_pass(owner):
    row = pin(owner)
    files = HostFiles()
    files.sync(owner.pk)
    hostkeys.delete(row)  # in the web, between two passes (the marker moved: a full pass)
    files.forget()
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
