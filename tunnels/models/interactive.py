"""Interactive tunnels: the prompt ssh is asking and the user's answer, while a login is under way."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tunnels.models.tunnel import Tunnel


class AuthPrompt(models.Model):
    """The login of one interactive tunnel in progress (one row per tunnel, gone when it ends).

    Holds the question ssh asked (its text only) and, for a few seconds, the user's answer
    encrypted (tunnels.sshkeys Fernet). Answers given up front with a start wait in
    ``responses`` (an encrypted JSON list) until ssh asks. Nothing here outlives
    ``settings.PROMPT_ANSWER_TTL``: ``tunnels.prompts.erase_stale`` blanks it. Not an owned model of
    its own: every surface reaches it through a tunnel it may see (tunnelsite.owned), never by its id.
    """

    tunnel = models.OneToOneField(Tunnel, on_delete=models.CASCADE, related_name="auth_prompt")
    # Which start attempt this belongs to (the worker's nonce); a late answer to an old attempt is refused.
    attempt = models.CharField(max_length=64, blank=True)
    # The question ssh asks now ("Password:", "Verification code:"); empty when none is waiting.
    prompt = models.CharField(max_length=500, blank=True)
    echo = models.BooleanField(default=False, help_text="The answer may be shown as typed (not a secret).")
    asked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The user's answer to the prompt, encrypted; erased when the worker takes it or after the TTL.
    answer = models.TextField(blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    # Answers sent with the start request, encrypted JSON list, taken in order as ssh asks.
    responses = models.TextField(blank=True)
    responses_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"login of {self.tunnel_id}: {self.prompt or '(nothing asked)'}"
