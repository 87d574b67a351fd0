"""Dashboard: the account page (limits and grants, as /users/me/ says) and the history of every session."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels import services
from tunnels.models import TunnelSession

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def session(tunnel, **values) -> TunnelSession:
    return TunnelSession.objects.create(
        tunnel=tunnel,
        owner=tunnel.owner,
        tunnel_uuid=tunnel.uuid,
        name=tunnel.name,
        hash=tunnel.hash,
        direction=tunnel.direction,
        listen="127.0.0.1:20001",
        **values,
    )


def test_both_pages_need_a_login(client):
    for url in ("/account/", "/history/"):
        response = client.get(url)
        assert response.status_code == 302 and f"next={url}" in response["Location"]


def test_account_shows_my_limits_and_grants(alice, owner, settings):
    settings.PORT_RANGE = (21000, 21999)
    owner.max_tunnels = 7
    owner.allowed_targets = "127.0.0.1:5432  # the team database\n\n# a comment line\n"
    owner.ssh_destinations = "10.0.0.0/8:22"
    owner.save()
    make_tunnel(owner, local_port="21000")

    html = alice.get("/account/").content.decode()

    assert '<dd data-fact="tunnels">1 of 7</dd>' in html
    assert '<dd data-fact="port-range">21000–21999</dd>' in html
    assert '<dd data-fact="bind">not allowed' in html
    assert "<code>127.0.0.1:5432  # the team database</code>" in html and "a comment line" not in html
    assert "<code>10.0.0.0/8:22</code>" in html


def test_account_says_when_nothing_is_granted(alice):
    html = alice.get("/account/").content.decode()
    assert 'data-fact="targets">None' in html and 'data-fact="destinations">None' in html


def test_account_of_staff_says_they_are_exempt(staff):
    client = Client()
    client.force_login(staff)
    html = client.get("/account/").content.decode()
    assert "any number" in html and "any port (staff)" in html and "not limited by the network policy" in html


def test_history_lists_my_sessions_only_including_deleted_tunnels(alice, owner, other):
    kept = make_tunnel(owner, name="kept")
    gone = make_tunnel(owner, name="gone", local_port="20002")
    theirs = make_tunnel(other, name="theirs", local_port="20003")
    session(kept, ended_at=timezone.now(), exit_reason="crashed", exit_detail="exit status 255")
    session(gone)
    session(theirs)
    services.delete_tunnel(gone)

    html = alice.get("/history/").content.decode()

    assert f'href="/tunnels/{kept.uuid}/">kept</a>' in html and "exit status 255" in html
    assert "gone <span" in html and "(deleted)" in html
    assert "theirs" not in html


def test_history_costs_the_same_queries_for_many_sessions(alice, owner, django_assert_max_num_queries):
    tunnel = make_tunnel(owner)
    session(tunnel)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        alice.get("/history/")
    for _ in range(30):
        session(tunnel)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert alice.get("/history/").status_code == 200


def test_header_links_both_pages(alice):
    html = alice.get("/").content.decode()
    assert 'href="/history/"' in html and 'href="/account/"' in html
