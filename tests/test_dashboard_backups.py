"""Dashboard: the backups pages (/backups/): list, a backup's tunnels, restore (and a refused restore
changing nothing), scoping, CSRF."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import make_tunnel
from tunnels import services
from tunnels.models import ConfigBackup, Tunnel

pytestmark = pytest.mark.django_db
URL = "/backups/"


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def newest(owner) -> ConfigBackup:
    return ConfigBackup.objects.filter(owner=owner).order_by("-created_at", "-id").first()


def state(owner) -> tuple:
    """What a refused restore must leave alone: the tunnels (with their settings) and the backups."""
    tunnels = sorted(Tunnel.objects.owned_by(owner).values_list("uuid", "hash", "name", "ssh_port"))
    return tunnels, ConfigBackup.objects.filter(owner=owner).count()


def test_anonymous_is_sent_to_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and "next=/backups/" in response["Location"]


def test_list_shows_own_backups_with_their_size(alice, owner, other):
    make_tunnel(owner, name="one")
    make_tunnel(owner, name="two")  # its backup holds "one"
    make_tunnel(other, name="theirs")
    page = alice.get(URL).content.decode()
    mine = ConfigBackup.objects.filter(owner=owner)
    assert all(str(backup.id) in page for backup in mine)
    assert str(ConfigBackup.objects.get(owner=other).id) not in page
    assert '<td data-label="Tunnels">1</td>' in page and '<td data-label="Tunnels">0</td>' in page
    assert f'href="{URL}"' in page  # the header links the page


@pytest.mark.parametrize("count", [3, 30])
def test_list_query_count_is_constant(alice, owner, django_assert_num_queries, count):
    snapshot = [{"name": f"t{i}", "hash": f"{i:032x}"} for i in range(count)]
    ConfigBackup.objects.bulk_create(
        ConfigBackup(owner=owner, reason="test", tunnels=snapshot, file_name=f"b{i}.json") for i in range(count)
    )
    with django_assert_num_queries(4):  # session, user, count, page
        page = alice.get(URL).content.decode()
    assert page.count(f'<td data-label="Tunnels">{count}</td>') == count


def test_a_backup_shows_its_tunnels(alice, owner):
    make_tunnel(owner, name="kept-one", local_port="21001")
    make_tunnel(owner, name="later")
    response = alice.get(f"{URL}{newest(owner).id}/")
    page = response.content.decode()
    assert response.status_code == 200 and "kept-one" in page and "21001" in page and "-L" in page
    assert "later" not in page.split("<h1")[1]


def test_restore_asks_then_restores_and_backs_up_first(alice, owner):
    make_tunnel(owner, name="keep")
    make_tunnel(owner, name="later")
    backup = newest(owner)  # holds only "keep"
    before = state(owner)
    confirm = alice.get(f"{URL}{backup.id}/restore/")
    assert confirm.status_code == 200 and b"Restore this backup" in confirm.content
    assert state(owner) == before  # asking changes nothing
    response = alice.post(f"{URL}{backup.id}/restore/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert list(Tunnel.objects.owned_by(owner).values_list("name", flat=True)) == ["keep"]
    assert newest(owner).reason.startswith("before restore")
    assert b"Configuration restored" in alice.get("/").content


def test_a_refused_restore_says_why_and_changes_nothing(alice, owner, other):
    tunnel = make_tunnel(owner, name="mine", local_port="22001")
    backup = newest(owner)  # taken before "mine": empty
    backup.tunnels = [{**tunnel.backup_dict(), "name": "clash", "local_port": 22002, "hash": ""}]
    backup.save()
    make_tunnel(other, local_port="22002")  # another user holds the port the backup wants
    before = state(owner)
    response = alice.post(f"{URL}{backup.id}/restore/")
    page = response.content.decode()
    assert response.status_code == 409, page
    assert "Nothing was changed" in page and "22002" in page
    assert state(owner) == before


def test_a_restore_of_a_bad_entry_is_400_and_changes_nothing(alice, owner):
    make_tunnel(owner, name="mine")
    backup = ConfigBackup.objects.create(
        owner=owner, reason="hand-edited", tunnels=[{"name": "bad", "remote_port": "nope"}], file_name="x.json"
    )
    before = state(owner)
    response = alice.post(f"{URL}{backup.id}/restore/")
    assert response.status_code == 400 and b"Nothing was changed" in response.content
    assert state(owner) == before


@pytest.mark.parametrize("suffix", ["", "restore/"])
def test_another_users_backup_is_404(alice, other, suffix):
    make_tunnel(other, name="theirs")
    backup = ConfigBackup.objects.get(owner=other)
    services.delete_tunnel(Tunnel.objects.get(owner=other))
    before = state(other)
    assert alice.get(f"{URL}{backup.id}/{suffix}").status_code == 404
    response = alice.post(f"{URL}{backup.id}/restore/")
    assert response.status_code == 404 and b"Not found" in response.content
    assert state(other) == before
    assert alice.get(f"{URL}not-a-uuid/{suffix}").status_code == 404


def test_restore_needs_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    make_tunnel(owner, name="keep")
    make_tunnel(owner, name="later")
    before = state(owner)
    assert client.post(f"{URL}{newest(owner).id}/restore/").status_code == 403
    assert state(owner) == before
