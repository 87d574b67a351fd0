"""The admin's side of interactive tunnels: the change page shows the pending login prompt with an answer
form (services.answer_prompt); a single start of an interactive tunnel works, bulk ones still skip it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests.factories import make_tunnel
from tests.test_admin_tunnels import change_form
from tunnels import prompts
from tunnels.models import AuthPrompt, Desired, Status, Tunnel

pytestmark = pytest.mark.django_db
LIST = "/admin/tunnels/tunnel/"
SECRET = "admin-typed-s3cret"


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return user


@pytest.fixture
def interactive(owner):
    return make_tunnel(owner, interactive=True, name="vpn-box")


def asking(tunnel, prompt: str = "Password:", echo: bool = False) -> None:
    prompts.begin(tunnel.pk, "attempt1")
    assert prompts.ask(tunnel.pk, "attempt1", prompt, echo) is None


def test_change_page_shows_the_pending_prompt_and_its_form(client, root, interactive, settings):
    settings.PROMPT_TIMEOUT = 60
    asking(interactive, "vpn-box one-time code:", echo=True)
    html = client.get(f"{LIST}{interactive.pk}/change/").content.decode()
    assert "Login prompt" in html and "vpn-box one-time code:" in html
    assert f'action="{LIST}{interactive.pk}/prompt/"' in html and 'name="answer" type="text"' in html
    assert 55 <= int(re.search(r'data-countdown="(\d+)"', html).group(1)) <= 60
    assert "dashboard/countdown" in html
    # Not nested in the change form: the answer form closes before the change form opens.
    assert html.index(f'action="{LIST}{interactive.pk}/prompt/"') < html.index('id="tunnel_form"')


def test_change_page_without_a_prompt_has_no_login_form(client, root, interactive, owner):
    assert "Login prompt" not in client.get(f"{LIST}{interactive.pk}/change/").content.decode()
    plain = make_tunnel(owner)
    assert "Login prompt" not in client.get(f"{LIST}{plain.pk}/change/").content.decode()


def test_answer_goes_to_the_worker_through_the_service(client, root, interactive):
    asking(interactive)
    response = client.post(f"{LIST}{interactive.pk}/prompt/", {"answer": SECRET}, follow=True)
    html = response.content.decode()
    assert "Answer sent: tunnel vpn-box is logging in" in html and SECRET not in html
    assert SECRET not in AuthPrompt.objects.get().answer
    assert prompts.take(interactive.pk, "attempt1") == SECRET


def test_answer_with_nothing_pending_is_an_error_message(client, root, interactive):
    response = client.post(f"{LIST}{interactive.pk}/prompt/", {"answer": SECRET}, follow=True)
    assert "Not sent: tunnel vpn-box is not waiting for an answer" in response.content.decode()
    assert not AuthPrompt.objects.exists()


def test_bad_answer_is_an_error_message_and_stores_nothing(client, root, interactive):
    asking(interactive)
    response = client.post(f"{LIST}{interactive.pk}/prompt/", {"answer": "two\nlines"}, follow=True)
    assert "Not sent: answer must be one line" in response.content.decode()
    assert AuthPrompt.objects.get().answer == ""


def test_answer_is_post_only_and_for_staff_with_change_permission(client, root, interactive, owner):
    asking(interactive)
    assert client.get(f"{LIST}{interactive.pk}/prompt/").status_code == 405
    assert client.post(f"{LIST}999999/prompt/", {"answer": SECRET}).status_code == 404
    plain_user = Client()
    plain_user.force_login(owner)  # not staff: the admin sends them to its login page
    response = plain_user.post(f"{LIST}{interactive.pk}/prompt/", {"answer": SECRET})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert AuthPrompt.objects.get().answer == ""


def test_staff_without_change_permission_is_refused(interactive, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="viewer-pass-123", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tunnel"))
    client = Client()
    client.force_login(viewer)
    asking(interactive)
    assert client.post(f"{LIST}{interactive.pk}/prompt/", {"answer": SECRET}).status_code == 403
    assert AuthPrompt.objects.get().answer == ""


def test_adding_an_interactive_tunnel_meant_to_run_starts_its_login(client, root, owner):
    form = change_form(make_tunnel(owner, name="template"), name="added-box", local_port="23999", interactive=True)
    form["desired_state"] = Desired.RUNNING
    response = client.post(f"{LIST}add/", form)
    assert response.status_code == 302, response.content[:2000]
    assert Tunnel.objects.get(name="added-box").desired_state == Desired.RUNNING


def test_needs_auth_status_has_a_badge(client, root, interactive):
    Tunnel.objects.filter(pk=interactive.pk).update(status=Status.NEEDS_AUTH, last_error="login ended")
    html = client.get(LIST).content.decode()
    assert "needs_auth" in html and "#b35c00" in html
