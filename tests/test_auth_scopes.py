"""Scopes: HasScope honours views' ``required_scopes`` and names the missing scope."""

from __future__ import annotations

import pytest
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate

from accounts import keys, tokens
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


class TunnelLikeViewSet(viewsets.ViewSet):
    """A stand-in for the tunnels API's contract: actions mapped to scopes."""

    required_scopes = {"start": "operate", "stop": "operate", "restart": "operate"}

    def list(self, request):
        return Response([])

    def create(self, request):
        return Response({}, status=201)

    def destroy(self, request, pk=None):
        return Response(status=204)

    def start(self, request, pk=None):
        return Response({"ok": True})


def call(token, method: str, action: str, **kwargs):
    factory = APIRequestFactory()
    view = TunnelLikeViewSet.as_view({method: action})
    request = getattr(factory, method)("/x/")
    force_authenticate(request, user=token.user, token=token)
    return view(request, **kwargs)


@pytest.mark.parametrize(
    ("scopes", "method", "action", "allowed"),
    [
        (["read"], "get", "list", True),
        (["read"], "post", "create", False),
        (["read"], "post", "start", False),
        (["operate"], "post", "start", True),
        (["operate"], "delete", "destroy", False),
        (["operate"], "get", "list", False),
        (["write"], "post", "create", True),
        (["write"], "delete", "destroy", True),
        (["write"], "post", "start", False),
    ],
)
def test_required_scopes_contract(owner, scopes, method, action, allowed):
    token, _ = tokens.mint(owner, scopes=scopes)
    response = call(token, method, action, **({"pk": "1"} if action != "list" and action != "create" else {}))
    assert (response.status_code < 400) is allowed


def test_refusal_names_the_missing_scope(owner):
    token, _ = tokens.mint(owner, scopes=["read"])
    response = call(token, "post", "start", pk="1")
    assert response.status_code == 403
    assert "'operate'" in response.data["error"]


def test_read_token_cannot_post_through_the_api(owner):
    response = client_for(owner, ["read"]).post("/api/v1/tokens/", {"label": "x"}, format="json")
    assert response.status_code == 403
    assert response.json() == {"error": "This credential lacks the 'write' scope required for this request."}


def test_operate_token_cannot_delete(owner):
    victim, _ = tokens.mint(owner)
    response = client_for(owner, ["operate", "read"]).delete(f"/api/v1/tokens/{victim.id}/")
    assert response.status_code == 403
    assert "'write'" in response.json()["error"]


def test_admin_scope_has_no_effect_for_non_staff(owner):
    token, raw = tokens.mint(owner, scopes=["read", "admin"])
    client = client_for(owner, ["read", "admin"])
    assert client.get("/api/v1/users/").status_code == 403
    assert "admin" not in client.get("/api/v1/users/me/").json()["scopes"]


def test_access_key_scopes_are_granted_like_token_scopes(owner):
    from accounts.permissions import granted_scopes

    key, _ = keys.create(owner, scopes=["read"])

    class Req:
        auth = key
        user = owner

    assert granted_scopes(Req) == {"read"}
