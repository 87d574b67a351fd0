"""REST API v1: connection tests of a tunnel (``POST /tunnels/{id}/test/`` and their results).

A mixin of ``TunnelViewSet``: the tunnel is found through the viewset's scoped
queryset, so another user's tunnel (and its tests) is a 404. The request goes
through ``tunnels.preflight``; a worker runs the test.
"""

from __future__ import annotations

import uuid

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from tunnels import preflight
from tunnels.api.base import WAIT_MAX, time_left, wait_seconds
from tunnels.models import ConnectionTest, TestState
from tunnels.services import Actor
from tunnelsite.schema import BAD_REQUEST, COMMON_ERRORS, NOT_FOUND, error

TEST_WAIT_DEFAULT = 10.0


class TestStepSerializer(serializers.Serializer):
    step = serializers.ChoiceField(
        choices=preflight.STEPS,
        help_text="`resolve`, `connect`, `host_key`, `auth`, `forward` in this order "
        "(`worker`: the worker running the test stopped).",
    )
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="What was checked, or why it failed, in words for the user.")


class ConnectionTestSerializer(serializers.ModelSerializer):
    """One connection test: pending until a worker claims it, running, then done with a result."""

    tunnel_id = serializers.UUIDField(source="tunnel.uuid", read_only=True)
    ok = serializers.BooleanField(allow_null=True, help_text="Null until the test is done.")
    step = serializers.CharField(help_text="The step that failed, or the last one passed; empty until done.")
    steps = TestStepSerializer(many=True, help_text="The steps run, in order, up to the first failure.")
    result_url = serializers.SerializerMethodField(help_text="Where to read this test's result.")

    class Meta:
        model = ConnectionTest
        fields = [
            "id",
            "tunnel_id",
            "state",
            "ok",
            "step",
            "detail",
            "steps",
            "created_at",
            "started_at",
            "finished_at",
            "result_url",
        ]
        read_only_fields = fields

    def get_result_url(self, test: ConnectionTest) -> str:
        return result_path(test)


def result_path(test: ConnectionTest) -> str:
    return reverse("tunnels-api:tunnel-test-result", kwargs={"id": test.tunnel.uuid, "test_id": test.pk})


TEST_EXAMPLE = {
    "id": "3b1f5d0e-8c1a-4f7e-9a51-0d2c6e7f8a90",
    "tunnel_id": "5f0f8a8e-7d3c-4a58-9a7e-2f1d4c0b9e11",
    "state": "done",
    "ok": False,
    "step": "auth",
    "detail": "permission denied (publickey): the SSH server did not accept the tunnel's key",
    "steps": [
        {"step": "resolve", "ok": True, "detail": "ssh.example.com resolves to 192.0.2.10"},
        {"step": "connect", "ok": True, "detail": "TCP connection to ssh.example.com:22 succeeded"},
        {
            "step": "host_key",
            "ok": True,
            "detail": "ssh-ed25519 SHA256:XmTX5Kvz7Bes/fkGF03t4q4ea2MeGMEexDvrJ287xWU matches the remembered host key",
        },
        {
            "step": "auth",
            "ok": False,
            "detail": "permission denied (publickey): the SSH server did not accept the tunnel's key",
        },
    ],
    "created_at": "2026-06-01T12:00:00Z",
    "started_at": "2026-06-01T12:00:00Z",
    "finished_at": "2026-06-01T12:00:01Z",
    "result_url": "/api/v1/tunnels/5f0f8a8e-7d3c-4a58-9a7e-2f1d4c0b9e11/tests/3b1f5d0e-8c1a-4f7e-9a51-0d2c6e7f8a90/",
}
PENDING_EXAMPLE = {
    **TEST_EXAMPLE,
    "state": "pending",
    "ok": None,
    "step": "",
    "detail": "",
    "steps": [],
    "started_at": None,
    "finished_at": None,
}
ID_PARAM = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The tunnel's id.")
TEST_ID_PARAM = OpenApiParameter("test_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The test's id.")
TEST_WAIT_PARAM = OpenApiParameter(
    "wait",
    float,
    description=f"Seconds to wait for the result (default {TEST_WAIT_DEFAULT:g}, 0 = don't wait, "
    f"at most {WAIT_MAX:g}).",
)
INTERACTIVE_CONFLICT = error("Interactive tunnels cannot be tested (ssh would need a person to answer prompts).")


class ConnectionTestActions:
    """``test`` (POST), ``tests`` (GET list) and ``test_result`` (GET one) on a tunnel."""

    test_scopes = {"test": "operate", "tests": "read", "test_result": "read"}

    @extend_schema(
        summary="Test a tunnel's connection",
        description="A worker runs a one-shot ssh with the tunnel's own settings (it does not start the tunnel): "
        "`resolve`, `connect`, `host_key`, `auth`, `forward`, stopping at the first failure. "
        "200 with the result when it is done within `wait` seconds, else 202 with the pending test and a "
        "`Location` to read it from. A test already pending for the tunnel is returned instead of a new one.",
        request=None,
        parameters=[ID_PARAM, TEST_WAIT_PARAM],
        responses={
            200: ConnectionTestSerializer,
            202: ConnectionTestSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: INTERACTIVE_CONFLICT,
            **COMMON_ERRORS,
        },
        examples=[
            OpenApiExample("done", value=TEST_EXAMPLE, response_only=True, status_codes=["200"]),
            OpenApiExample("not done yet", value=PENDING_EXAMPLE, response_only=True, status_codes=["202"]),
        ],
    )
    @action(detail=True, methods=["post"])
    def test(self, request, id=None) -> Response:
        tunnel = self.get_object()
        wait = wait_seconds(request, default=TEST_WAIT_DEFAULT)
        test = preflight.request_test(tunnel, Actor.from_request(request))
        test = preflight.wait_for_result(test, time_left(request, wait))
        body = ConnectionTestSerializer(test).data
        if test.state == TestState.DONE:
            return Response(body)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["result_url"]})

    @extend_schema(
        summary="A tunnel's recent connection tests",
        parameters=[ID_PARAM],
        responses={200: ConnectionTestSerializer(many=True), 400: BAD_REQUEST, 404: NOT_FOUND, **COMMON_ERRORS},
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def tests(self, request, id=None) -> Response:
        tunnel = self.get_object()
        page = self.paginate_queryset(preflight.tests_of(tunnel))
        return self.get_paginated_response(ConnectionTestSerializer(page, many=True).data)

    @extend_schema(
        summary="One connection test of a tunnel",
        parameters=[ID_PARAM, TEST_ID_PARAM],
        responses={200: ConnectionTestSerializer, 404: NOT_FOUND, **COMMON_ERRORS},
        examples=[OpenApiExample("done", value=TEST_EXAMPLE, response_only=True)],
    )
    @action(detail=True, methods=["get"], url_path=r"tests/(?P<test_id>[^/]+)", filter_backends=[])
    def test_result(self, request, id=None, test_id=None) -> Response:
        tunnel = self.get_object()
        try:
            test = preflight.tests_of(tunnel).get(pk=uuid.UUID(test_id))
        except (ValueError, ConnectionTest.DoesNotExist):
            raise NotFound("No such connection test of this tunnel.") from None
        return Response(ConnectionTestSerializer(test).data)
