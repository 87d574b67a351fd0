"""The dashboard through Django's test client: login, the tunnels page, the tunnel page and its changes.

Every change goes through the service layer; another user's tunnel is the 404 page on every URL and
nothing of it changes; every POST needs the CSRF token; pages read without JavaScript.
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import make_tunnel, tunnel_data
from tests.worker_fixtures import attach_key, make_key
from tunnels import logfiles
from tunnels.models import ConnectionTest, Desired, Status, Tunnel

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def bob(other) -> Client:
    client = Client()
    client.force_login(other)
    return client


def test_visitor_gets_the_login_form_at_root(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'action="/login/"' in html and 'name="password"' in html
    assert "Tunnels</h1>" not in html


def test_login_with_password_lands_on_the_tunnels_page(client, owner):
    page = client.get("/login/")
    assert page.status_code == 200
    response = client.post("/login/", {"username": "alice", "password": "alice-pass-123", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert "Tunnels</h1>" in client.get("/").content.decode()


def test_wrong_password_shows_the_form_again(client, owner):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_logout_is_post_only(alice):
    assert alice.get("/logout/").status_code == 405
    assert alice.post("/logout/").status_code == 302
    assert 'name="password"' in alice.get("/").content.decode()


def test_password_change(alice, owner):
    response = alice.post(
        "/password/",
        {
            "old_password": "alice-pass-123",
            "new_password1": "a-much-longer-secret-9",
            "new_password2": "a-much-longer-secret-9",
        },
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a-much-longer-secret-9")


def test_header_names_the_user_and_only_existing_pages(alice, owner):
    html = alice.get("/").content.decode()
    assert 'class="who"' in html and "alice" in html
    assert '<a href="/" aria-current="page">Tunnels</a>' in html
    assert "/admin/" not in html  # not staff


def test_staff_see_the_admin_link(staff):
    client = Client()
    client.force_login(staff)
    assert 'href="/admin/"' in client.get("/").content.decode()


def test_empty_state_explains_tunnels(alice):
    html = alice.get("/").content.decode()
    assert "No tunnels yet" in html and "<svg" in html and "-L local forward" in html


def test_table_shows_only_my_tunnels_without_javascript(alice, owner, other):
    mine = make_tunnel(owner, name="my-db", direction="local_to_remote", remote_port="9000", local_port="8080")
    make_tunnel(other, name="bobs-secret")
    html = alice.get("/").content.decode()
    # Everything is in the HTML itself: nothing needs a script to be read.
    assert "my-db" in html and "bobs-secret" not in html
    assert '<span class="flag" title="ssh -R: remote forward">-R</span>' in html
    assert f'href="/tunnels/{mine.uuid}/"' in html
    assert "badge-starting" in html and "Waiting for a worker" in html


def test_status_badge_reason_is_on_hover_and_visible_text(alice, owner):
    tunnel = make_tunnel(owner, name="broken")
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.FAILED, last_error="Permission denied (publickey)")
    html = alice.get("/tunnels/table/").content.decode()
    assert 'title="Permission denied (publickey)"' in html
    assert '<span class="reason">Permission denied (publickey)</span>' in html


def test_table_fragment_costs_constant_queries(alice, owner, django_assert_max_num_queries):
    for _ in range(3):
        make_tunnel(owner)
    with django_assert_max_num_queries(6) as few:
        alice.get("/tunnels/table/")
    for _ in range(10):
        make_tunnel(owner)
    with django_assert_max_num_queries(len(few.captured_queries)):
        alice.get("/tunnels/table/")


def test_add_creates_through_the_service_and_goes_to_its_page(alice, owner):
    data = tunnel_data(name="web", direction="remote_to_local")
    response = alice.post("/tunnels/add/", data)
    tunnel = Tunnel.objects.get(owner=owner, name="web")
    assert response.status_code == 302 and response["Location"] == f"/tunnels/{tunnel.uuid}/"
    assert tunnel.desired_state == Desired.RUNNING  # a new tunnel is meant to run, as in the API


def test_add_form_names_my_port_range(alice, owner, settings):
    settings.PORT_RANGE = (21000, 21999)
    assert "Your range for -L: 21000–21999." in alice.get("/tunnels/add/").content.decode()
    owner.local_port_min, owner.local_port_max = 30000, 30099
    owner.save()
    assert "Your range for -L: 30000–30099." in alice.get("/tunnels/add/").content.decode()


def test_add_with_a_bad_port_is_a_form_error_and_creates_nothing(alice, owner):
    response = alice.post("/tunnels/add/", tunnel_data(name="bad", remote_port="99999", direction="remote_to_local"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="error"' in html or 'class="errors"' in html
    assert not Tunnel.objects.filter(owner=owner).exists()


def test_add_duplicate_port_is_a_clear_error(alice, owner, other):
    taken = make_tunnel(other, direction="remote_to_local")
    response = alice.post("/tunnels/add/", tunnel_data(name="clash", local_port=taken.local_port))
    assert response.status_code == 200
    assert "bob" not in response.content.decode()  # a clash never says whose port
    assert not Tunnel.objects.filter(owner=owner).exists()


def test_edit_changes_through_the_service(alice, owner):
    tunnel = make_tunnel(owner, name="old")
    form = alice.get(f"/tunnels/{tunnel.uuid}/edit/")
    assert 'value="old"' in form.content.decode()
    data = {**tunnel_data(name="new", local_port=tunnel.local_port), "direction": tunnel.direction}
    response = alice.post(f"/tunnels/{tunnel.uuid}/edit/", {**data, "auto_restart": "on"})
    assert response.status_code == 302
    tunnel.refresh_from_db()
    assert tunnel.name == "new"


def test_delete_asks_first_then_deletes(alice, owner):
    tunnel = make_tunnel(owner, name="gone")
    page = alice.get(f"/tunnels/{tunnel.uuid}/delete/")
    assert page.status_code == 200 and "Delete gone?" in page.content.decode()
    assert Tunnel.objects.filter(pk=tunnel.pk).exists()
    assert alice.post(f"/tunnels/{tunnel.uuid}/delete/").status_code == 302
    assert not Tunnel.objects.filter(pk=tunnel.pk).exists()


def test_row_actions_change_desired_state(alice, owner):
    tunnel = make_tunnel(owner)
    alice.post(f"/tunnels/{tunnel.uuid}/action/", {"action": "stop"})
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED
    alice.post(f"/tunnels/{tunnel.uuid}/action/", {"action": "start"})
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING


def test_refused_start_is_a_message_and_changes_nothing(alice, owner):
    # An -L tunnel that lost its port to another tunnel may not run (interactive ones may now:
    # tests/test_dashboard_prompt.py).
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(listen_port=None, desired_state=Desired.STOPPED)
    response = alice.post(f"/tunnels/{tunnel.uuid}/action/", {"action": "start"}, follow=True)
    assert "another tunnel on this host holds its port" in response.content.decode()
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_bulk_acts_on_my_selection_only(alice, owner, other):
    mine = [make_tunnel(owner) for _ in range(2)]
    theirs = make_tunnel(other)
    ids = [str(t.uuid) for t in mine] + [str(theirs.uuid), "not-a-uuid"]
    response = alice.post("/tunnels/bulk/", {"action": "stop", "selected": ids})
    assert response.status_code == 302
    assert set(Tunnel.objects.filter(owner=owner).values_list("desired_state", flat=True)) == {Desired.STOPPED}
    theirs.refresh_from_db()
    assert theirs.desired_state == Desired.RUNNING


def test_tunnel_page_shows_configuration_log_and_copy_buttons(alice, owner, settings):
    tunnel = make_tunnel(owner, name="paged")
    tunnel.log_path.parent.mkdir(parents=True, exist_ok=True)
    tunnel.log_path.write_text("first line\nsecond line\n")
    html = alice.get(f"/tunnels/{tunnel.uuid}/").content.decode()
    assert "second line" in html
    assert f'data-needs-js hidden data-copy="{tunnel.uuid}"' in html and f'data-copy="{tunnel.hash}"' in html
    assert "This tunnel uses no SSH key of yours." in html
    assert f'action="/tunnels/{tunnel.uuid}/edit/"' in html and 'value="paged"' in html  # edit in place
    fragment = alice.get(f"/tunnels/{tunnel.uuid}/log/").content.decode()
    assert "second line" in fragment and logfiles.path_for(tunnel.uuid) == tunnel.log_path


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "edit/"),
        ("post", "edit/"),
        ("get", "delete/"),
        ("post", "delete/"),
        ("post", "action/"),
        ("get", "log/"),
        ("get", "state/"),
        ("post", "test/"),
        ("get", "test/result/"),
    ],
)
def test_another_users_tunnel_is_the_404_page(bob, owner, method, suffix):
    tunnel = make_tunnel(owner, name="alices")
    before = Tunnel.objects.values().get(pk=tunnel.pk)
    data = {**tunnel_data(name="hijack"), "action": "stop"} if method == "post" else None
    response = getattr(bob, method)(f"/tunnels/{tunnel.uuid}/{suffix}", data)
    assert response.status_code == 404
    assert "Not found" in response.content.decode() and "alices" not in response.content.decode()
    assert Tunnel.objects.values().get(pk=tunnel.pk) == before


def test_malformed_id_is_404(alice):
    assert alice.get("/tunnels/nope/").status_code == 404


def test_anonymous_is_sent_to_login(client, owner):
    tunnel = make_tunnel(owner)
    response = client.get(f"/tunnels/{tunnel.uuid}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_poll_after_logout_sends_the_page_to_login(client):
    response = client.get("/tunnels/table/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == "/login/"
    assert response.content == b""


def test_every_change_needs_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    tunnel = make_tunnel(owner)
    for path, data in [
        (f"/tunnels/{tunnel.uuid}/action/", {"action": "stop"}),
        (f"/tunnels/{tunnel.uuid}/delete/", {}),
        ("/tunnels/bulk/", {"action": "stop", "selected": [str(tunnel.uuid)]}),
        ("/tunnels/add/", tunnel_data()),
        ("/logout/", {}),
    ]:
        assert client.post(path, data).status_code == 403, path
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING
    assert Tunnel.objects.count() == 1


def test_test_connection_requests_a_test_and_shows_it(alice, owner):
    tunnel = make_tunnel(owner)
    response = alice.post(f"/tunnels/{tunnel.uuid}/test/", follow=True)
    assert ConnectionTest.objects.filter(tunnel=tunnel).count() == 1
    assert "waiting for a worker" in response.content.decode()


def test_test_connection_of_an_interactive_tunnel_is_refused(alice, owner):
    tunnel = make_tunnel(owner, interactive=True)
    response = alice.post(f"/tunnels/{tunnel.uuid}/test/", follow=True)
    assert "interactive tunnels cannot be tested" in response.content.decode()
    assert not ConnectionTest.objects.exists()


def test_tunnel_page_shows_the_authorized_keys_line_of_its_key(alice, owner):
    key = make_key(owner)
    tunnel = make_tunnel(owner, remote_port="db.internal:5432")
    attach_key(tunnel, key)
    html = alice.get(f"/tunnels/{tunnel.uuid}/").content.decode()
    assert "restrict,port-forwarding,permitopen=&quot;db.internal:5432&quot;" in html
    assert key.public_key.split()[1] in html


def test_failed_logins_are_throttled_like_the_api(client, owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login_username": "2/minute"},
    }
    for _ in range(2):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    refused = client.post("/login/", {"username": "alice", "password": "alice-pass-123"})
    assert refused.status_code == 429 and "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.real_network_policy
def test_policy_refusal_is_shown_on_the_form_and_creates_nothing(alice, owner):
    response = alice.post(
        "/tunnels/add/", tunnel_data(name="loop", remote_host="me@127.0.0.1", direction="remote_to_local")
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="errors" role="alert"' in html or 'class="error"' in html
    assert "127.0.0.1" in html
    assert not Tunnel.objects.filter(owner=owner).exists()
