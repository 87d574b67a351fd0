"""tunnels.prompts: the question ssh asks and the user's answer, encrypted, taken once, erased."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels import prompts, services
from tunnels.models import AuthPrompt

pytestmark = pytest.mark.django_db

SECRET = "hunter2-correct-horse"


@pytest.fixture
def tunnel(owner):
    return make_tunnel(owner, interactive=True)


def raw_rows() -> str:
    """Every stored column of every login row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM " + connection.ops.quote_name(AuthPrompt._meta.db_table))  # noqa: S608 (a model name)
        return repr(cursor.fetchall())


def test_nothing_pending_before_ssh_asks(tunnel):
    prompts.begin(tunnel.pk, "a1")
    assert prompts.pending(tunnel) is None
    with pytest.raises(prompts.NoPrompt):
        prompts.answer(tunnel, SECRET)


def test_question_then_answer_taken_once_and_erased(tunnel):
    prompts.begin(tunnel.pk, "a1")
    assert prompts.ask(tunnel.pk, "a1", "Password:", False) is None
    waiting = prompts.pending(tunnel)
    assert waiting is not None and waiting.prompt == "Password:" and not waiting.echo
    assert 100 < waiting.seconds_left <= 120
    assert prompts.pending_ids([tunnel.pk]) == {tunnel.pk}

    prompts.answer(tunnel, SECRET)
    assert SECRET not in raw_rows()  # stored encrypted
    assert prompts.pending(tunnel) is None  # answered: nothing more to answer
    with pytest.raises(prompts.NoPrompt):
        prompts.answer(tunnel, "second try")  # one answer per question

    assert prompts.take(tunnel.pk, "a1") == SECRET
    assert prompts.take(tunnel.pk, "a1") is None
    assert AuthPrompt.objects.get(tunnel=tunnel).answer == ""


def test_an_answer_for_an_old_attempt_is_not_handed_to_a_new_one(tunnel):
    prompts.begin(tunnel.pk, "a1")
    prompts.ask(tunnel.pk, "a1", "Password:", False)
    prompts.answer(tunnel, SECRET)
    assert prompts.take(tunnel.pk, "a2") is None
    prompts.begin(tunnel.pk, "a2")  # a new attempt forgets the old answer
    assert prompts.take(tunnel.pk, "a2") is None


def test_responses_from_the_start_answer_in_order_without_asking_the_user(tunnel, owner):
    services.request_start(tunnel, services.Actor(owner), responses=[SECRET, "123456"])
    assert SECRET not in raw_rows()
    prompts.begin(tunnel.pk, "a1")
    assert prompts.ask(tunnel.pk, "a1", "Password:", False) == SECRET
    assert prompts.ask(tunnel.pk, "a1", "Verification code:", False) == "123456"
    assert prompts.pending(tunnel) is None
    assert prompts.ask(tunnel.pk, "a1", "Password:", False) is None  # used up: the user is asked
    assert prompts.pending(tunnel).prompt == "Password:"


def test_a_question_past_its_time_is_not_pending(tunnel):
    prompts.begin(tunnel.pk, "a1")
    prompts.ask(tunnel.pk, "a1", "Password:", False, timeout=-1)
    assert prompts.pending(tunnel) is None
    assert prompts.pending_ids([tunnel.pk]) == set()
    with pytest.raises(prompts.NoPrompt):
        prompts.answer(tunnel, SECRET)


def test_unused_answers_are_erased_after_the_ttl(tunnel, owner, settings):
    services.request_start(tunnel, services.Actor(owner), responses=["unused"])
    prompts.begin(tunnel.pk, "a1")
    prompts.ask(tunnel.pk, "a1", "Password:", False)  # consumes "unused"
    prompts.ask(tunnel.pk, "a1", "Code:", False)
    prompts.answer(tunnel, SECRET)
    assert prompts.erase_stale() == 0  # still fresh
    later = timezone.now() + timedelta(seconds=settings.PROMPT_ANSWER_TTL + 1)
    assert prompts.erase_stale(later) == 1
    assert prompts.take(tunnel.pk, "a1") is None
    row = AuthPrompt.objects.get(tunnel=tunnel)
    assert row.answer == "" and row.responses == ""


def test_end_leaves_nothing(tunnel):
    prompts.begin(tunnel.pk, "a1")
    prompts.ask(tunnel.pk, "a1", "Password:", False)
    prompts.answer(tunnel, SECRET)
    prompts.end(tunnel.pk)
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()


@pytest.mark.parametrize("bad", [None, 5, "two\nlines", "nul\0", "x" * (prompts.MAX_ANSWER + 1)])
def test_bad_answers_are_refused(tunnel, bad):
    prompts.begin(tunnel.pk, "a1")
    prompts.ask(tunnel.pk, "a1", "Password:", False)
    with pytest.raises(services.InvalidInput):
        prompts.answer(tunnel, bad)
    assert prompts.pending(tunnel) is not None


@pytest.mark.parametrize("bad", ["pw", ["ok", 3], ["x"] * (prompts.MAX_RESPONSES + 1)])
def test_bad_responses_change_nothing(tunnel, owner, bad):
    with pytest.raises(services.InvalidInput):
        services.request_start(tunnel, services.Actor(owner), responses=bad)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == "stopped"
    assert not AuthPrompt.objects.exists()


def test_responses_for_a_key_tunnel_are_refused(owner):
    tunnel = make_tunnel(owner)
    services.request_stop(tunnel)
    with pytest.raises(services.InvalidInput, match="interactive tunnels only"):
        services.request_start(tunnel, services.Actor(owner), responses=["pw"])
    tunnel.refresh_from_db()
    assert tunnel.desired_state == "stopped"
