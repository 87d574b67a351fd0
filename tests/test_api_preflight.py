"""REST: requesting connection tests and reading their results (no worker: what the web side does)."""

from __future__ import annotations

import pytest

from tests.conftest import client_for
from tests.factories import tunnel_data
from tunnels import services
from tunnels.models import ConnectionTest, Tunnel
from tunnels.models import TestState as State

pytestmark = pytest.mark.django_db


def stopped_tunnel(owner, **overrides) -> Tunnel:
    return services.create_tunnel(owner, tunnel_data(**overrides), start=False)


def request_url(tunnel: Tunnel) -> str:
    return f"/api/v1/tunnels/{tunnel.uuid}/test/"


def list_url(tunnel: Tunnel) -> str:
    return f"/api/v1/tunnels/{tunnel.uuid}/tests/"


def test_request_without_worker_is_202_pending_and_bumps_the_marker(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    before = services.marker_value()

    response = owner_client.post(request_url(tunnel))  # default wait: returns at once when no worker is alive

    assert response.status_code == 202
    body = response.json()
    assert (body["state"], body["ok"], body["step"], body["detail"], body["steps"]) == ("pending", None, "", "", [])
    assert body["tunnel_id"] == str(tunnel.uuid)
    assert response["Location"] == body["result_url"] == f"/api/v1/tunnels/{tunnel.uuid}/tests/{body['id']}/"
    assert services.marker_value() == before + 1
    test = ConnectionTest.objects.get()
    assert (test.owner, test.requested_by, test.state) == (owner, owner, State.PENDING)
    tunnel.refresh_from_db()
    assert (tunnel.desired_state, tunnel.status) == ("stopped", "stopped")


def test_second_request_while_pending_returns_the_same_test(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    first = owner_client.post(request_url(tunnel) + "?wait=0").json()

    second = owner_client.post(request_url(tunnel) + "?wait=0").json()

    assert second["id"] == first["id"]
    assert ConnectionTest.objects.count() == 1


def test_a_new_test_once_the_last_is_done(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    first = owner_client.post(request_url(tunnel) + "?wait=0").json()
    ConnectionTest.objects.filter(pk=first["id"]).update(state=State.DONE, ok=True, step="forward")

    second = owner_client.post(request_url(tunnel) + "?wait=0").json()

    assert second["id"] != first["id"]


def test_result_and_list_show_a_done_test(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    steps = [{"step": "resolve", "ok": True, "detail": "x resolves"}, {"step": "connect", "ok": False, "detail": "no"}]
    test = ConnectionTest.objects.create(
        tunnel=tunnel, owner=owner, state=State.DONE, ok=False, step="connect", detail="no", steps=steps
    )

    body = owner_client.get(f"{list_url(tunnel)}{test.pk}/").json()
    listed = owner_client.get(list_url(tunnel)).json()

    assert (body["ok"], body["step"], body["steps"]) == (False, "connect", steps)
    assert [entry["id"] for entry in listed["entries"]] == [str(test.pk)]


def test_interactive_tunnel_is_409(owner, owner_client):
    tunnel = stopped_tunnel(owner, interactive=True)

    response = owner_client.post(request_url(tunnel))

    assert response.status_code == 409
    assert "interactive" in response.json()["error"]
    assert not ConnectionTest.objects.exists()


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "99999"])
def test_bad_wait_is_400_and_requests_nothing(owner, owner_client, wait):
    tunnel = stopped_tunnel(owner)

    response = owner_client.post(request_url(tunnel), QUERY_STRING=f"wait={wait}")

    assert response.status_code == 400
    assert "wait" in response.json()["fields"]
    assert not ConnectionTest.objects.exists()


def test_other_users_tunnel_and_tests_are_404(owner, other_client):
    tunnel = stopped_tunnel(owner)
    test = ConnectionTest.objects.create(tunnel=tunnel, owner=owner)

    assert other_client.post(request_url(tunnel)).status_code == 404
    assert other_client.get(list_url(tunnel)).status_code == 404
    assert other_client.get(f"{list_url(tunnel)}{test.pk}/").status_code == 404
    assert ConnectionTest.objects.count() == 1


def test_a_test_of_another_tunnel_or_a_malformed_id_is_404(owner, owner_client):
    tunnel, elsewhere = stopped_tunnel(owner), stopped_tunnel(owner)
    test = ConnectionTest.objects.create(tunnel=elsewhere, owner=owner)

    assert owner_client.get(f"{list_url(tunnel)}{test.pk}/").status_code == 404
    response = owner_client.get(f"{list_url(tunnel)}not-a-uuid/")
    assert response.status_code == 404
    assert response.json() == {"error": "No such connection test of this tunnel."}


def test_staff_acting_as_admin_may_test_anyones_tunnel(owner, staff_client):
    tunnel = stopped_tunnel(owner)

    response = staff_client.post(request_url(tunnel) + "?wait=0")

    assert response.status_code == 202
    assert ConnectionTest.objects.get().owner == owner


def test_requesting_needs_operate_and_reading_needs_read(owner):
    tunnel = stopped_tunnel(owner)
    reader = client_for(owner, ["read"])

    assert reader.post(request_url(tunnel)).status_code == 403
    assert reader.get(list_url(tunnel)).status_code == 200
    assert client_for(owner, ["operate"]).post(request_url(tunnel) + "?wait=0").status_code == 202


@pytest.mark.parametrize("count", [3, 30])
def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    tunnel = stopped_tunnel(owner)
    ConnectionTest.objects.bulk_create(ConnectionTest(tunnel=tunnel, owner=owner) for _ in range(count))
    owner_client.get(list_url(tunnel))  # the token's last_used write happens once; measure steady state
    # token lookup, tunnel, count, page, request-history insert
    with django_assert_num_queries(5):
        response = owner_client.get(list_url(tunnel), {"limit": 100})
    assert response.json()["total"] == count
