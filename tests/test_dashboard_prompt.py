"""The dashboard's side of interactive tunnels: starting one, the login card on its page (prompt, field,
countdown), answering through the service layer, needs_auth, and the marker in the tunnels table.

The worker's side is played by tunnels.prompts.begin/ask/take, as the worker calls them.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels import prompts
from tunnels.models import AuthPrompt, Desired, Status, Tunnel

pytestmark = pytest.mark.django_db

SECRET = "s3cret-dashboard-answer"


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


@pytest.fixture
def interactive(owner):
    return make_tunnel(owner, interactive=True, name="vpn-box")


def asking(tunnel, prompt: str = "alice@server's password:", echo: bool = False) -> None:
    prompts.begin(tunnel.pk, "attempt1")
    assert prompts.ask(tunnel.pk, "attempt1", prompt, echo) is None


def page(client: Client, tunnel) -> str:
    response = client.get(f"/tunnels/{tunnel.uuid}/")
    assert response.status_code == 200
    return response.content.decode()


def test_start_button_starts_an_interactive_tunnel_and_says_where_to_log_in(alice, interactive):
    here = f"/tunnels/{interactive.uuid}/"
    response = alice.post(f"{here}action/", {"action": "start", "next": here}, follow=True)
    html = response.content.decode()
    assert "is starting: answer its login prompt on its page" in html
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.RUNNING
    # Nothing asked yet: the card's place polls for the question.
    assert f'hx-get="/tunnels/{interactive.uuid}/prompt/"' in html and "Login</h2>" not in html


def test_login_card_shows_the_prompt_a_password_field_and_the_countdown(alice, interactive, settings):
    settings.PROMPT_TIMEOUT = 90
    interactive.desired_state = Desired.RUNNING
    asking(interactive)
    html = page(alice, interactive)
    assert "Login</h2>" in html and "alice@server&#x27;s password:" in html
    assert 'name="answer" type="password"' in html
    assert f'action="/tunnels/{interactive.uuid}/prompt/answer/"' in html
    seconds = int(re.search(r'data-countdown="(\d+)"', html).group(1))
    assert 85 <= seconds <= 90
    # A shown question is not polled away while the user types.
    card = html[html.index('id="tunnel-prompt"') - 5 : html.index("Login</h2>")]
    assert "hx-get" not in card
    assert "login prompt" in html  # the status badge says so too


def test_a_question_that_may_be_shown_is_a_text_field(alice, interactive):
    asking(interactive, "Verification code:", echo=True)
    html = page(alice, interactive)
    assert 'name="answer" type="text"' in html and "Verification code:" in html


def test_prompt_fragment_shows_the_card_once_ssh_asks(alice, interactive):
    alice.post(f"/tunnels/{interactive.uuid}/action/", {"action": "start"})
    before = alice.get(f"/tunnels/{interactive.uuid}/prompt/").content.decode()
    assert "Login</h2>" not in before and "hx-get" in before
    asking(interactive)
    after = alice.get(f"/tunnels/{interactive.uuid}/prompt/").content.decode()
    assert "Login</h2>" in after and "hx-get" not in after


def test_answer_goes_through_the_service_layer_to_the_worker(alice, interactive):
    asking(interactive)
    response = alice.post(f"/tunnels/{interactive.uuid}/prompt/answer/", {"answer": SECRET}, follow=True)
    html = response.content.decode()
    assert "Answer sent" in html and SECRET not in html
    assert "Login</h2>" not in html  # answered: nothing left to answer
    row = AuthPrompt.objects.get()
    assert row.answer and SECRET not in row.answer
    assert prompts.take(interactive.pk, "attempt1") == SECRET


def test_answer_when_nothing_is_asked_is_a_clear_message(alice, interactive):
    response = alice.post(f"/tunnels/{interactive.uuid}/prompt/answer/", {"answer": SECRET}, follow=True)
    html = response.content.decode()
    assert "Not sent: tunnel vpn-box is not waiting for an answer" in html and SECRET not in html
    assert not AuthPrompt.objects.exists()


def test_bad_answer_is_a_message_and_stores_nothing(alice, interactive):
    asking(interactive)
    response = alice.post(f"/tunnels/{interactive.uuid}/prompt/answer/", {"answer": "x" * 2000}, follow=True)
    assert "Not sent: answer must be one line" in response.content.decode()
    assert AuthPrompt.objects.get().answer == ""


def test_another_users_prompt_is_404_everywhere(bob, interactive):
    asking(interactive)
    assert bob.get(f"/tunnels/{interactive.uuid}/prompt/").status_code == 404
    assert bob.post(f"/tunnels/{interactive.uuid}/prompt/answer/", {"answer": SECRET}).status_code == 404
    assert AuthPrompt.objects.get().answer == ""


def test_answer_needs_the_csrf_token(owner, interactive):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    asking(interactive)
    assert client.post(f"/tunnels/{interactive.uuid}/prompt/answer/", {"answer": SECRET}).status_code == 403
    assert AuthPrompt.objects.get().answer == ""


def test_needs_auth_shows_its_reason_and_the_start_and_log_in_hint(alice, interactive):
    Tunnel.objects.filter(pk=interactive.pk).update(
        status=Status.NEEDS_AUTH, status_changed_at=timezone.now(), last_error="ssh master ended (connection closed)"
    )
    html = page(alice, interactive)
    assert "needs login" in html and "ssh master ended (connection closed)" in html
    assert "Start and log in" in html
    listed = alice.get("/").content.decode()
    assert "needs login" in listed and "not restarted by itself" in listed


def test_tunnels_table_marks_the_tunnel_whose_prompt_waits(alice, owner, interactive):
    quiet = make_tunnel(owner, interactive=True, name="quiet-box")
    asking(interactive)
    html = alice.get("/tunnels/table/").content.decode()
    marker = f'href="/tunnels/{interactive.uuid}/#tunnel-prompt"'
    assert marker in html and html.count("login waiting") == 1
    assert f'href="/tunnels/{quiet.uuid}/#tunnel-prompt"' not in html


@pytest.mark.parametrize("count", [2, 30])
def test_tunnels_table_query_count_is_constant(alice, owner, django_assert_num_queries, count):
    for index in range(count):
        tunnel = make_tunnel(owner, interactive=True, name=f"box{index}")
        if index % 2 == 0:
            prompts.begin(tunnel.pk, "a")
            prompts.ask(tunnel.pk, "a", "Password:", False)
    alice.get("/tunnels/table/")
    # session, user, tunnels, pending prompts
    with django_assert_num_queries(4):
        html = alice.get("/tunnels/table/").content.decode()
    assert html.count("login waiting") == (count + 1) // 2
