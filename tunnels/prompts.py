"""The prompts of interactive tunnels: what ssh asks, and the user's answers on their way to it.

The one place that reads and writes ``AuthPrompt`` rows. The web side shows a pending prompt
(``pending``) and stores an answer (``answer``) or answers given with a start (``preload``);
the worker records what ssh asks (``ask``), takes the answer once (``take``) and ends the login
(``end``). Answers are encrypted at rest (tunnels.sshkeys: Fernet under the server secret),
never logged, and erased as soon as they are taken, or by ``erase_stale`` after
``settings.PROMPT_ANSWER_TTL`` seconds whether used or not. The prompt text is ssh's question
only; it never contains an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tunnels import sshkeys
from tunnels.models import AuthPrompt, Tunnel
from tunnelsite.errors import InvalidInput, ServiceError

MAX_ANSWER = 1024
MAX_RESPONSES = 10
MAX_PROMPT = 500


class NoPrompt(ServiceError):
    """Answering a tunnel that is not waiting for an answer."""

    status = 409


@dataclass(frozen=True)
class Pending:
    """A question ssh is asking and nobody has answered yet."""

    prompt: str
    echo: bool
    asked_at: datetime
    expires_at: datetime

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.expires_at - timezone.now()).total_seconds()))


def _seal(text: str) -> str:
    return sshkeys.encrypt(text.encode())


def _open(token: str) -> str:
    return sshkeys.decrypt(token).decode()


def check_answer(value: object, what: str = "answer") -> str:
    """An answer as the user sent it: a string of at most MAX_ANSWER characters, no NUL or newline
    (ssh reads one line from the askpass helper)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string", fields={what: ["must be a string"]})
    if len(value) > MAX_ANSWER or any(c in value for c in "\0\r\n"):
        raise InvalidInput(
            f"{what} must be one line of at most {MAX_ANSWER} characters",
            fields={what: [f"one line of at most {MAX_ANSWER} characters"]},
        )
    return value


def check_responses(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_RESPONSES:
        raise InvalidInput(
            f"responses must be a list of at most {MAX_RESPONSES} strings",
            fields={"responses": [f"a list of at most {MAX_RESPONSES} strings"]},
        )
    return [check_answer(item, "responses") for item in value]


# --- the web side -------------------------------------------------------------


def preload(tunnel: Tunnel, responses: list[str] | None) -> None:
    """Start a new login for ``tunnel``: forget any earlier one, keep ``responses`` (encrypted) for ssh."""
    now = timezone.now()
    with transaction.atomic():
        AuthPrompt.objects.filter(tunnel=tunnel).delete()
        if responses:
            AuthPrompt.objects.create(tunnel=tunnel, responses=_seal(json.dumps(responses)), responses_at=now)


def _waiting(now: datetime | None = None):
    """The one rule of a pending question: asked, not answered yet, not past its time."""
    return AuthPrompt.objects.filter(answer="", expires_at__gt=now or timezone.now()).exclude(prompt="")


def pending(tunnel: Tunnel) -> Pending | None:
    row = _waiting().filter(tunnel=tunnel).first()
    if row is None:
        return None
    return Pending(prompt=row.prompt, echo=row.echo, asked_at=row.asked_at, expires_at=row.expires_at)


def pending_ids(tunnel_ids: list[int]) -> set[int]:
    """Which of these tunnels have a question waiting (one query, for lists)."""
    if not tunnel_ids:
        return set()
    return set(_waiting().filter(tunnel_id__in=tunnel_ids).values_list("tunnel_id", flat=True))


def answer(tunnel: Tunnel, text: object) -> None:
    """Store the user's answer to the question ``tunnel``'s ssh is asking now."""
    text = check_answer(text)
    now = timezone.now()
    with transaction.atomic():
        updated = _waiting(now).filter(tunnel=tunnel).update(answer=_seal(text), answered_at=now)
    if not updated:
        raise NoPrompt(f"tunnel {tunnel.name} is not waiting for an answer (no login prompt is pending)")


# --- the worker side ------------------------------------------------------------


def begin(tunnel_id: int, attempt: str) -> None:
    """A new login attempt of the worker's (keeps answers given with the start)."""
    row, _ = AuthPrompt.objects.get_or_create(tunnel_id=tunnel_id)
    AuthPrompt.objects.filter(pk=row.pk).update(
        attempt=attempt, prompt="", answer="", answered_at=None, asked_at=None, expires_at=None
    )


def ask(tunnel_id: int, attempt: str, prompt: str, echo: bool, timeout: float | None = None) -> str | None:
    """ssh asks ``prompt``: the next answer given with the start if there is one (returned at once),
    otherwise record the question for the user and return None (poll ``take``)."""
    now = timezone.now()
    timeout = settings.PROMPT_TIMEOUT if timeout is None else timeout
    with transaction.atomic():
        row = AuthPrompt.objects.select_for_update().filter(tunnel_id=tunnel_id, attempt=attempt).first()
        if row is None:
            return None
        if row.responses:
            queued = json.loads(_open(row.responses))
            first, rest = queued[0], queued[1:]
            row.responses = _seal(json.dumps(rest)) if rest else ""
            row.save(update_fields=["responses"])
            return first
        row.prompt = prompt[:MAX_PROMPT]
        row.echo = echo
        row.asked_at = now
        row.expires_at = now + timedelta(seconds=timeout)
        row.answer = ""
        row.answered_at = None
        row.save(update_fields=["prompt", "echo", "asked_at", "expires_at", "answer", "answered_at"])
    return None


def take(tunnel_id: int, attempt: str) -> str | None:
    """The user's answer to the current question, once: erased from the database as it is read."""
    with transaction.atomic():
        row = (
            AuthPrompt.objects.select_for_update()
            .filter(tunnel_id=tunnel_id, attempt=attempt)
            .exclude(answer="")
            .first()
        )
        if row is None:
            return None
        sealed = row.answer
        AuthPrompt.objects.filter(pk=row.pk).update(
            answer="", answered_at=None, prompt="", asked_at=None, expires_at=None
        )
    return _open(sealed)


def end(tunnel_id: int, attempt: str | None = None) -> None:
    """The login is over (succeeded, failed or given up): nothing of it stays. With ``attempt``, only
    that attempt's row goes (a start request may already have put the next attempt's answers there)."""
    rows = AuthPrompt.objects.filter(tunnel_id=tunnel_id)
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    rows.delete()


def erase_stale(now: datetime | None = None) -> int:
    """Blank answers and start responses older than PROMPT_ANSWER_TTL, and questions past their time."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PROMPT_ANSWER_TTL)
    erased = AuthPrompt.objects.filter(~Q(answer=""), answered_at__lt=cutoff).update(answer="", answered_at=None)
    erased += AuthPrompt.objects.filter(~Q(responses=""), responses_at__lt=cutoff).update(
        responses="", responses_at=None
    )
    return erased
