"""The tunnels' admin: saves go through the service layer (desired state, owner), list, actions, pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from tests.factories import make_tunnel, tunnel_data
from tunnels import prompts, services, services_keys, services_owner
from tunnels.admin.tunnels import ERROR_CHARS
from tunnels.models import AuthPrompt, ConfigBackup, Desired, Status, Tunnel, TunnelSession, WorkerNode
from tunnels.validation import CONFIG_FIELDS

pytestmark = pytest.mark.django_db
LIST = "/admin/tunnels/tunnel/"


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return user


def change_form(tunnel: Tunnel, **changes) -> dict:
    """The change page's POST body for ``tunnel`` as stored, with ``changes``."""
    form = {field: getattr(tunnel, field) for field in CONFIG_FIELDS}
    form.update(owner=tunnel.owner_id, ssh_key=tunnel.ssh_key_id or "", desired_state=tunnel.desired_state)
    form.update(changes)
    for flag in ("interactive", "auto_restart"):  # checkboxes: sent only when ticked
        if form.pop(flag):
            form[flag] = "on"
    return {key: "" if value is None else value for key, value in form.items()}


def post_change(client, tunnel: Tunnel, **changes):
    return client.post(f"{LIST}{tunnel.pk}/change/", change_form(tunnel, **changes))


@pytest.mark.parametrize("desired", [Desired.STOPPED, Desired.RUNNING])
def test_add_keeps_the_desired_state_chosen(client, root, owner, desired):
    form = {**tunnel_data(name="added"), "owner": owner.pk, "direction": "local_to_remote", "desired_state": desired}
    response = client.post(f"{LIST}add/", form)
    assert response.status_code == 302, response.content[:2000]
    assert Tunnel.objects.get(name="added").desired_state == desired


def test_add_page_defaults_the_owner_and_hides_internal_fields(client, root):
    page = client.get(f"{LIST}add/").content.decode()
    assert f'name="owner" value="{root.pk}"' in page
    for internal in ("generation", "running_generation", "process_create_time", "consecutive_failures"):
        assert f"field-{internal}" not in page


@pytest.mark.parametrize(("start", "desired"), [(True, Desired.STOPPED), (False, Desired.RUNNING)])
def test_changing_desired_state_goes_through_the_service(client, root, owner, start, desired):
    tunnel = services.create_tunnel(owner, tunnel_data(), start=start)
    before = services.marker_value()
    response = post_change(client, tunnel, desired_state=desired)
    assert response.status_code == 302, response.content[:2000]
    tunnel.refresh_from_db()
    assert tunnel.desired_state == desired and tunnel.desired_by == root
    assert services.marker_value() > before


def test_interactive_tunnel_may_be_set_running_and_begins_a_login(client, root, owner):
    # Once refused ("cannot be meant to run"); an operator can now answer its prompt on this page.
    tunnel = make_tunnel(owner, interactive=True)
    prompts.begin(tunnel.pk, "old-attempt")
    response = post_change(client, tunnel, desired_state=Desired.RUNNING)
    assert response.status_code == 302, response.content[:2000]
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING and tunnel.desired_by == root
    assert not AuthPrompt.objects.exists()  # request_start forgot the earlier login


def test_changing_the_owner_moves_the_tunnel(client, root, owner, other):
    tunnel = make_tunnel(owner)
    generation, backups_before = tunnel.generation, ConfigBackup.objects.count()
    response = post_change(client, tunnel, owner=other.pk)
    assert response.status_code == 302, response.content[:2000]
    tunnel.refresh_from_db()
    assert tunnel.owner == other and tunnel.generation == generation + 1
    assert ConfigBackup.objects.count() == backups_before + 2
    newest = ConfigBackup.objects.order_by("-created_at").values_list("owner", flat=True)[:2]
    assert set(newest) == {owner.pk, other.pk}
    assert not Tunnel.objects.owned_by(owner).exists()


def test_moving_a_tunnel_with_the_old_owners_key_is_refused_until_a_key_is_chosen(client, root, owner, other):
    key = services_keys.generate_key(owner, "laptop")
    tunnel = make_tunnel(owner)
    assert tunnel.ssh_key == key  # the owner's only key is the default
    response = post_change(client, tunnel, owner=other.pk)
    assert response.status_code == 200 and escape(services_owner.OLD_OWNERS_KEY) in response.content.decode()
    tunnel.refresh_from_db()
    assert tunnel.owner == owner and tunnel.ssh_key == key

    theirs = services_keys.generate_key(other, "desktop")
    assert post_change(client, tunnel, owner=other.pk, ssh_key=theirs.pk).status_code == 302
    tunnel.refresh_from_db()
    assert (tunnel.owner, tunnel.ssh_key) == (other, theirs)


def test_change_owner_service_keeps_no_key_of_the_old_owner(owner, other, staff):
    mine, theirs = services_keys.generate_key(owner, "laptop"), services_keys.generate_key(other, "desktop")
    tunnel = make_tunnel(owner)
    with pytest.raises(services.InvalidInput, match="belongs to the old owner"):
        services_owner.change_owner(tunnel, other)  # keeping the key is refused
    with pytest.raises(services.InvalidInput, match="belongs to the old owner"):
        services_owner.change_owner(tunnel, other, ssh_key=mine.pk)
    with pytest.raises(services.InvalidInput, match="no such key"):
        services_owner.change_owner(tunnel, staff, ssh_key=theirs.pk)  # someone else's key
    tunnel.refresh_from_db()
    assert (tunnel.owner, tunnel.ssh_key) == (owner, mine)
    moved = services_owner.change_owner(tunnel, other, services.Actor(user=staff), ssh_key=None)
    assert (moved.owner, moved.ssh_key) == (other, None)
    assert ConfigBackup.objects.filter(owner=other, actor=staff).exists()


def test_moving_a_tunnel_respects_the_new_owners_limit(client, root, owner, other):
    other.max_tunnels = 0
    other.save()
    tunnel = make_tunnel(owner)
    response = post_change(client, tunnel, owner=other.pk)
    assert response.status_code == 200 and b"tunnel limit reached" in response.content
    tunnel.refresh_from_db()
    assert tunnel.owner == owner


def test_moving_a_tunnel_to_an_owner_with_the_same_configuration_is_refused(client, root, owner, other):
    data = tunnel_data(direction="local_to_remote")
    tunnel, _ = make_tunnel(owner, **data), make_tunnel(other, **data)
    response = post_change(client, tunnel, owner=other.pk)
    assert response.status_code == 200 and b"already exists" in response.content
    tunnel.refresh_from_db()
    assert tunnel.owner == owner


def run_action(client, action: str, tunnels: list[Tunnel]):
    return client.post(LIST, {"action": action, "_selected_action": [t.pk for t in tunnels]}, follow=True)


def test_bulk_actions_change_desired_state_through_the_service(client, root, owner):
    tunnels = [services.create_tunnel(owner, tunnel_data(), start=False) for _ in range(3)]
    before = services.marker_value()
    page = run_action(client, "start_tunnels", tunnels[:2]).content.decode()
    assert "2 asked to start" in page
    states = dict(Tunnel.objects.values_list("pk", "desired_state"))
    assert [states[t.pk] for t in tunnels] == [Desired.RUNNING, Desired.RUNNING, Desired.STOPPED]
    assert services.marker_value() > before

    before = services.marker_value()
    assert "1 asked to stop" in run_action(client, "stop_tunnels", tunnels[:1]).content.decode()
    assert Tunnel.objects.get(pk=tunnels[0].pk).desired_state == Desired.STOPPED
    assert services.marker_value() > before

    before = services.marker_value()
    assert "3 asked to restart" in run_action(client, "restart_tunnels", tunnels).content.decode()
    for tunnel in tunnels:
        fresh = Tunnel.objects.get(pk=tunnel.pk)
        expected = (Desired.RUNNING, tunnel.generation + 1, root)
        assert (fresh.desired_state, fresh.generation, fresh.desired_by) == expected
    assert services.marker_value() > before


def test_restart_action_skips_interactive_tunnels(client, root, owner):
    interactive = make_tunnel(owner, interactive=True)
    page = run_action(client, "restart_tunnels", [interactive]).content.decode()
    assert "0 asked to restart, 1 skipped" in page and "is interactive" in page
    assert Tunnel.objects.get(pk=interactive.pk).generation == interactive.generation


def test_list_shows_badges_errors_and_flags(client, root, owner):
    failed = make_tunnel(owner, name="broken")
    error = "ssh: connect to host example.com port 22: Connection refused " + "x" * 80
    Tunnel.objects.filter(pk=failed.pk).update(status=Status.FAILED, last_error=error, node="node-a")
    make_tunnel(owner, name="quiet", direction="local_to_remote")
    page = client.get(LIST).content.decode()
    assert 'class="ts-badge"' in page and "background:#b3261e" in page  # failed is red
    assert f'title="{error}"' in page  # the whole error on hover
    shortened = error[: ERROR_CHARS - 1] + "…"  # cut to fit the column
    assert shortened in page and error not in page.replace(f'title="{error}"', "")
    assert ">-L<" in page and ">-R<" in page and "node-a" in page


def populate(owner, other, count: int) -> None:
    for index in range(count):
        tunnel = make_tunnel(owner if index % 2 else other)
        TunnelSession.objects.create(
            tunnel=tunnel, owner=tunnel.owner, tunnel_uuid=tunnel.uuid, name=tunnel.name, hash=tunnel.hash
        )


def list_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("query", ["", "?status__exact=stopped&o=2", "?q=alice&direction__exact=local_to_remote"])
def test_list_queries_do_not_grow_with_tunnels(client, root, owner, other, query):
    populate(owner, other, 3)
    few = list_queries(client, LIST + query)
    populate(owner, other, 30)
    assert list_queries(client, LIST + query) == few


def test_filters_and_search(client, root, owner, other):
    mine = make_tunnel(owner, name="mine", remote_host="user@alpha.example.com")
    theirs = make_tunnel(other, name="theirs", direction="local_to_remote")
    Tunnel.objects.filter(pk=theirs.pk).update(status=Status.FAILED, node="node-b")

    def names(query: str) -> set[str]:
        response = client.get(LIST + query)
        assert response.status_code == 200
        return {t.name for t in response.context["cl"].result_list}

    assert names("?status__exact=failed") == {"theirs"}
    assert names(f"?owner__id__exact={owner.pk}") == {"mine"}
    assert names("?node=node-b") == {"theirs"}
    assert names("?direction__exact=local_to_remote") == {"theirs"}
    assert names("?q=bob") == {"theirs"}
    assert names("?q=alpha.example") == {"mine"}
    assert names(f"?q={mine.hash[:10]}") == {"mine"}
    page = client.get(LIST).content.decode()
    for filter_title in ("By status", "By owner", "By node", "By direction"):
        assert filter_title in page


def test_change_page_shows_log_tail_and_recent_sessions(client, root, owner):
    tunnel = make_tunnel(owner)
    tunnel.log_path.parent.mkdir(parents=True, exist_ok=True)
    tunnel.log_path.write_text("".join(f"line {n} <b>\n" for n in range(200)))
    TunnelSession.objects.create(
        tunnel=tunnel,
        owner=owner,
        tunnel_uuid=tunnel.uuid,
        name=tunnel.name,
        hash=tunnel.hash,
        pid=4242,
        exit_reason="crashed",
        exit_detail="exit status 255",
    )
    page = client.get(f"{LIST}{tunnel.pk}/change/").content.decode()
    assert "line 199 &lt;b&gt;" in page and "line 150 " in page and "line 149 " not in page
    assert "4242" in page and "exit status 255" in page
    assert f"/admin/tunnels/tunnelsession/?tunnel__id__exact={tunnel.pk}" in page
    sessions = client.get(f"/admin/tunnels/tunnelsession/?tunnel__id__exact={tunnel.pk}")
    assert sessions.status_code == 200 and list(sessions.context["cl"].result_list) == [tunnel.sessions.get()]


def test_sessions_and_backups_are_records_not_forms(client, root, owner, django_capture_on_commit_callbacks):
    tunnel = make_tunnel(owner)
    make_tunnel(owner)  # its backup holds the first tunnel
    session = TunnelSession.objects.create(
        tunnel=tunnel, owner=owner, tunnel_uuid=tunnel.uuid, name=tunnel.name, hash=tunnel.hash
    )
    for url in ("/admin/tunnels/tunnelsession/add/", "/admin/tunnels/configbackup/add/"):
        assert client.get(url).status_code == 403, url
    page = client.get(f"/admin/tunnels/tunnelsession/{session.pk}/change/").content.decode()
    assert 'name="_save"' not in page  # view only

    backup = ConfigBackup.objects.order_by("-created_at").first()
    path = services.backups_dir() / backup.file_name
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/tunnels/configbackup/{backup.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ConfigBackup.objects.filter(pk=backup.pk).exists() and not path.exists()


def test_list_marks_tunnels_on_a_stale_node(client, root, owner):
    now, lease = timezone.now(), settings.WORKER_LEASE_SECONDS
    WorkerNode.objects.create(name="live-node", last_seen=now)
    WorkerNode.objects.create(name="dead-node", last_seen=now - timedelta(seconds=lease + 5))
    for node in ("live-node", "dead-node", "gone-node", ""):
        Tunnel.objects.filter(pk=make_tunnel(owner, name=f"on-{node or 'none'}").pk).update(node=node)
    rows = client.get(LIST).content.decode().split("<tr")

    def row(name: str) -> str:
        return next(r for r in rows if f">{name}<" in r)

    assert ">stale<" in row("on-dead-node") and ">stale<" in row("on-gone-node")
    assert ">stale<" not in row("on-live-node") and ">stale<" not in row("on-none")
