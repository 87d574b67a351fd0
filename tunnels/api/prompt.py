"""REST API v1: the login prompt of an interactive tunnel (``GET``/``POST /tunnels/{id}/prompt/``).

A mixin of ``TunnelViewSet``: the tunnel is found through the viewset's scoped queryset, so
another user's tunnel is a 404. Reading and answering go through the service layer
(``services.pending_prompt`` / ``services.answer_prompt``); the answer is never sent back,
and request history records no body (``accounts.middleware``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from tunnels import services
from tunnels.models import Tunnel
from tunnels.prompts import MAX_ANSWER, Pending
from tunnelsite.errors import InvalidInput
from tunnelsite.schema import BAD_REQUEST, COMMON_ERRORS, NOT_FOUND, error


class PromptSerializer(serializers.Serializer):
    pending = serializers.BooleanField(help_text="Whether ssh is waiting for an answer now.")
    prompt = serializers.CharField(
        allow_null=True, help_text="ssh's question (`Password:`, `Verification code:`); null when none is pending."
    )
    echo = serializers.BooleanField(help_text="The answer is not a secret and may be shown as typed.")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="When the attempt gives up unanswered.")
    seconds_left = serializers.IntegerField(allow_null=True, help_text="Seconds until `expires_at`.")


class AnswerSerializer(serializers.Serializer):
    """Request body of an answer (documentation only: ``tunnels.prompts.check_answer`` validates)."""

    answer = serializers.CharField(
        max_length=MAX_ANSWER,
        trim_whitespace=False,
        help_text=f"The answer to the pending prompt: one line of at most {MAX_ANSWER} characters. "
        "Handed to ssh once, then erased; never shown again.",
    )


class AcceptedSerializer(serializers.Serializer):
    accepted = serializers.BooleanField(help_text="Always true: the answer waits, encrypted, for ssh to take it.")


NOTHING_PENDING = {"pending": False, "prompt": None, "echo": False, "expires_at": None, "seconds_left": None}
PROMPT_EXAMPLE = {
    "pending": True,
    "prompt": "alice@ssh.example.com's password:",
    "echo": False,
    "expires_at": "2026-06-01T12:02:00Z",
    "seconds_left": 117,
}
ID_PARAM = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The tunnel's id.")
NO_PROMPT = error("No login prompt of this tunnel is waiting for an answer (not started, answered, or expired).")


def prompt_body(asked: Pending | None) -> dict[str, Any]:
    if asked is None:
        return dict(NOTHING_PENDING)
    return PromptSerializer(
        {
            "pending": True,
            "prompt": asked.prompt,
            "echo": asked.echo,
            "expires_at": asked.expires_at,
            "seconds_left": asked.seconds_left,
        }
    ).data


def answer_of(data: object) -> object:
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object with an answer", {"answer": ["this field is required"]})
    if "answer" not in data:
        raise InvalidInput("answer is required", {"answer": ["this field is required"]})
    return data["answer"]


class PromptActions:
    """``prompt`` (GET: what ssh asks now) and ``answer_prompt`` (POST: the user's answer) on a tunnel."""

    prompt_scopes = {"prompt": "read", "answer_prompt": "operate"}

    @extend_schema(
        summary="The login prompt of an interactive tunnel",
        description="While an interactive tunnel starts, its ssh asks questions (a password, a one-time code): "
        "the one waiting now, if any. `pending` false (200) when nothing is asked.",
        parameters=[ID_PARAM],
        responses={200: PromptSerializer, 404: NOT_FOUND, **COMMON_ERRORS},
        examples=[
            OpenApiExample("asked", value=PROMPT_EXAMPLE, response_only=True),
            OpenApiExample("nothing asked", value=NOTHING_PENDING, response_only=True),
        ],
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def prompt(self, request, id=None) -> Response:
        tunnel: Tunnel = self.get_object()
        return Response(prompt_body(services.pending_prompt(tunnel)))

    @extend_schema(
        summary="Answer the login prompt of an interactive tunnel",
        description="Hands the answer to the tunnel's ssh (through the worker, encrypted at rest for seconds). "
        "202: accepted; whether the login succeeded shows in the tunnel's `status` (`running`, or `failed` with "
        "`permission denied`), and a further question appears at `GET` of this endpoint.",
        parameters=[ID_PARAM],
        request=AnswerSerializer,
        responses={
            202: AcceptedSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: NO_PROMPT,
            **COMMON_ERRORS,
        },
    )
    @prompt.mapping.post
    def answer_prompt(self, request, id=None) -> Response:
        tunnel: Tunnel = self.get_object()
        services.answer_prompt(tunnel, answer_of(request.data))
        return Response({"accepted": True}, status=status.HTTP_202_ACCEPTED)
