"""The one visibility rule, on every surface that lists or fetches owned rows.

``SURFACES`` is a table: one line per endpoint (a factory making an owned row,
its list URL, its detail URL). Every line is walked as the owner, another
user, staff whose credential lacks ``admin`` and staff with it. A new owned
endpoint is one more line. ``FACTORIES`` makes a row of every model that
declares ``owner_field``; the unit tests of ``tunnelsite.owned.visible``
discover those models, so a new owned model without a factory fails here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import models
from django.urls import Resolver404, resolve

from accounts import keys, tokens
from accounts.models import ALL_SCOPES, SCOPE_ADMIN, AccessKey, ApiRequest, ApiToken
from accounts.visibility import OwnerFilter
from tests.conftest import client_for
from tests.factories import make_tunnel
from tunnels import prompts, services, sshkeys
from tunnels.models import AuthPrompt, ConfigBackup, ConnectionTest, KnownHost, SshKey, Tunnel, TunnelSession
from tunnelsite.owned import OwnedQuerySet, owner_field, visible

pytestmark = pytest.mark.django_db

_serial = count(1)


# --- one owned row of each model ------------------------------------------------


def new_tunnel(user) -> Tunnel:
    return make_tunnel(user)


def new_session(user) -> TunnelSession:
    tunnel = make_tunnel(user)
    return TunnelSession.objects.create(
        tunnel=tunnel,
        owner=user,
        tunnel_uuid=tunnel.uuid,
        name=tunnel.name,
        hash=tunnel.hash,
        direction=tunnel.direction,
        listen=tunnel.listen,
    )


def new_backup(user) -> ConfigBackup:
    return services.snapshot(user, "visibility test")


def new_token(user) -> ApiToken:
    return tokens.mint(user, label="visibility test")[0]


def new_access_key(user) -> AccessKey:
    return keys.create(user, label="visibility test")[0]


def new_request(user) -> ApiRequest:
    return ApiRequest.objects.create(user=user, method="GET", path="/api/v1/me", status=200, duration_ms=1.0)


def new_ssh_key(user) -> SshKey:
    key = sshkeys.build(user, f"key-{next(_serial)}", sshkeys.new_private_key())
    key.save()
    return key


def new_known_host(user) -> KnownHost:
    key = sshkeys.public_line(sshkeys.new_private_key())
    return KnownHost.objects.create(
        owner=user,
        host="127.0.0.1",
        port=20000 + next(_serial),
        key_type=key.split()[0],
        key=key.split()[1],
        fingerprint=sshkeys.fingerprint(key),
    )


def new_connection_test(user) -> ConnectionTest:
    return ConnectionTest.objects.create(tunnel=make_tunnel(user), owner=user, requested_by=user)


def new_auth_prompt(user) -> AuthPrompt:
    """An interactive tunnel's login with a question waiting (as the worker records it). Not an owned model
    of its own (no FACTORIES entry): reached only through its tunnel, which the surface line checks."""
    tunnel = make_tunnel(user, interactive=True)
    prompts.begin(tunnel.pk, "visibility")
    prompts.ask(tunnel.pk, "visibility", "Password:", False)
    return AuthPrompt.objects.get(tunnel=tunnel)


def prompt_tunnel_id(obj: AuthPrompt) -> str:
    return str(obj.tunnel.uuid)


FACTORIES: dict[type[models.Model], Callable[[Any], models.Model]] = {
    Tunnel: new_tunnel,
    TunnelSession: new_session,
    ConfigBackup: new_backup,
    SshKey: new_ssh_key,
    KnownHost: new_known_host,
    ConnectionTest: new_connection_test,
    ApiToken: new_token,
    AccessKey: new_access_key,
    ApiRequest: new_request,
}


# --- the surfaces -----------------------------------------------------------------


def pk(obj: models.Model) -> str:
    return str(obj.pk)


def tunnel_id(obj: Tunnel) -> str:
    return str(obj.uuid)


def compat_hash(obj: Tunnel) -> str:
    return obj.hash


def random_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Surface:
    """An endpoint over one owned model. URLs are formatted with ``{id}`` (and ``{tunnel}``, the row's tunnel)."""

    name: str
    make: Callable[[Any], models.Model]
    list_url: str | None
    detail_url: str | None
    ref: Callable[[Any], str] = pk  # how the API names the row
    key: str = "id"  # the list item's field carrying ``ref``
    random_ref: Callable[[], str] = random_uuid
    # The list lives under the row's tunnel: whoever may not see the tunnel gets its 404, not an empty list.
    under_tunnel: bool = False

    def urls(self, obj: models.Model, ref: str, tunnel: str | None = None) -> tuple[str | None, str | None]:
        if tunnel is None:
            parent = getattr(obj, "tunnel", None)
            tunnel = str(parent.uuid) if isinstance(parent, Tunnel) else ""
        values = {"id": ref, "tunnel": tunnel}
        return tuple(url.format(**values) if url else None for url in (self.list_url, self.detail_url))


SURFACES = [
    Surface("tunnels", new_tunnel, "/api/v1/tunnels/", "/api/v1/tunnels/{id}/", ref=tunnel_id),
    Surface("history", new_session, "/api/v1/history/", None),
    Surface("backups", new_backup, "/api/v1/backups/", "/api/v1/backups/{id}/"),
    Surface("tokens", new_token, "/api/v1/tokens/", "/api/v1/tokens/{id}/"),
    Surface("access-keys", new_access_key, "/api/v1/access-keys/", "/api/v1/access-keys/{id}/"),
    Surface("requests", new_request, "/api/v1/requests/", None),
    Surface(
        "compat",
        new_tunnel,
        "/api/autossh/list",
        "/api/autossh/config/{id}",
        ref=compat_hash,
        key="hash",
        random_ref=lambda: uuid.uuid4().hex,
    ),
    Surface("calls", new_tunnel, None, "/api/v1/calls/client_status?tunnel={id}", ref=tunnel_id),
    Surface("ssh-keys", new_ssh_key, "/api/v1/ssh-keys/", "/api/v1/ssh-keys/{id}/"),
    Surface("known-hosts", new_known_host, "/api/v1/known-hosts/", "/api/v1/known-hosts/{id}/"),
    Surface("login-prompt", new_auth_prompt, None, "/api/v1/tunnels/{id}/prompt/", ref=prompt_tunnel_id),
    Surface(
        "connection-tests",
        new_connection_test,
        "/api/v1/tunnels/{tunnel}/tests/",
        "/api/v1/tunnels/{tunnel}/tests/{id}/",
        under_tunnel=True,
    ),
]

# Who looks, and whether they should see the owner's row.
VIEWERS = {
    "owner": True,
    "other": False,
    "staff-without-admin": False,
    "staff-with-admin": True,
}


def viewer_client(viewer: str, owner, other, staff):
    if viewer == "owner":
        return client_for(owner)
    if viewer == "other":
        return client_for(other)
    scopes = list(ALL_SCOPES) if viewer == "staff-with-admin" else [s for s in ALL_SCOPES if s != SCOPE_ADMIN]
    return client_for(staff, scopes)


def require_route(url: str, template: str) -> list:
    """The filter backends of the view behind ``url``; skips a line whose endpoint has not landed yet."""
    try:
        view = resolve(url.split("?")[0]).func
    except Resolver404:
        pytest.skip(f"{template} is not routed yet")
    # A viewset action may set its own filter_backends (an initkwarg of the routed view).
    return list(view.initkwargs.get("filter_backends", getattr(view.cls, "filter_backends", [])))


def refs_in(body: Any, key: str) -> set[str]:
    entries = body["entries"] if isinstance(body, dict) else body
    return {str(entry[key]) for entry in entries}


def masked(response, ref: str) -> str:
    """The body with the looked-up reference masked, to compare 'not yours' with 'does not exist'."""
    return json.dumps(response.json(), sort_keys=True).replace(ref, "<ref>")


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("surface", SURFACES, ids=lambda surface: surface.name)
def test_owned_rows_are_seen_by_their_owner_and_admin_only(surface, viewer, owner, other, staff):
    row = surface.make(owner)
    ref = surface.ref(row)
    list_url, detail_url = surface.urls(row, ref)
    for url, template in ((list_url, surface.list_url), (detail_url, surface.detail_url)):
        if url:
            require_route(url, template)
    client = viewer_client(viewer, owner, other, staff)
    if list_url:
        check_list(client, surface, row, ref, sees=VIEWERS[viewer])
    if detail_url:
        check_detail(client, surface, row, ref, sees=VIEWERS[viewer])


def check_list(client, surface: Surface, row: models.Model, ref: str, sees: bool) -> None:
    list_url = surface.urls(row, ref)[0]
    response = client.get(list_url)
    if surface.under_tunnel and not sees:
        unknown = client.get(surface.urls(row, ref, tunnel=random_uuid())[0])
        assert response.status_code == unknown.status_code == 404, response.content
        assert response.json() == unknown.json()
        return
    assert response.status_code == 200, response.content
    assert (ref in refs_in(response.json(), surface.key)) is sees


def check_detail(client, surface: Surface, row: models.Model, ref: str, sees: bool) -> None:
    response = client.get(surface.urls(row, ref)[1])
    if sees:
        assert response.status_code == 200, response.content
        return
    assert response.status_code == 404, response.content
    random_ref = surface.random_ref()
    unknown = client.get(surface.urls(row, random_ref)[1])
    assert unknown.status_code == 404
    assert masked(response, ref) == masked(unknown, random_ref)


@pytest.mark.parametrize("surface", [s for s in SURFACES if s.list_url], ids=lambda surface: surface.name)
def test_staff_owner_filter_narrows_admin_lists_only(surface, owner, other, staff):
    """``?owner=``/``?user=`` (OwnerFilter): staff acting as admin narrow to one user; others are unaffected."""
    mine, theirs = surface.make(owner), surface.make(other)
    list_url = surface.urls(mine, "")[0]
    if OwnerFilter not in require_route(list_url, surface.list_url):
        pytest.skip(f"{surface.list_url} has no owner filter")
    param = OwnerFilter.param(resolve(list_url).func.cls)
    mine_ref, theirs_ref = surface.ref(mine), surface.ref(theirs)

    def listed(client, username: str) -> set[str]:
        response = client.get(list_url, {param: username})
        assert response.status_code == 200, response.content
        return refs_in(response.json(), surface.key) & {mine_ref, theirs_ref}

    admin = viewer_client("staff-with-admin", owner, other, staff)
    assert listed(admin, "bob") == {theirs_ref}
    assert listed(admin, "alice") == {mine_ref}
    assert listed(admin, "nobody") == set()
    assert listed(client_for(owner), "bob") == {mine_ref}
    assert listed(viewer_client("staff-without-admin", owner, other, staff), "bob") == set()


def test_every_owned_model_has_an_endpoint_row():
    """Every owned model is walked through at least one endpoint (add a line to SURFACES)."""
    covered = {surface.make for surface in SURFACES}
    missing = [model.__name__ for model, factory in FACTORIES.items() if factory not in covered]
    assert missing == []


# --- tunnelsite.owned.visible itself ----------------------------------------------


def owned_models() -> list[type[models.Model]]:
    return [model for model in apps.get_models() if hasattr(model, "owner_field")]


def test_owned_models_are_discovered():
    assert set(FACTORIES) <= set(owned_models())


@pytest.mark.parametrize("model", owned_models(), ids=lambda model: model.__name__)
def test_owned_model_declares_a_user_field_and_an_owned_manager(model):
    field = model._meta.get_field(owner_field(model))
    assert field.related_model is get_user_model()
    assert isinstance(model.objects.all(), OwnedQuerySet)
    assert model in FACTORIES, f"add a factory for {model.__name__} to FACTORIES (and a line to SURFACES)"


@pytest.mark.parametrize("model", owned_models(), ids=lambda model: model.__name__)
def test_visible_is_own_rows_or_everything_for_staff_as_admin(model, owner, other, staff):
    mine, theirs = FACTORIES[model](owner), FACTORIES[model](other)
    rows = model.objects.filter(pk__in=[mine.pk, theirs.pk])

    def seen(user, as_admin: bool = False) -> set:
        return set(visible(rows, user, as_admin=as_admin).values_list("pk", flat=True))

    assert seen(AnonymousUser()) == set()
    assert seen(AnonymousUser(), as_admin=True) == set()
    assert seen(owner) == {mine.pk}
    assert seen(owner, as_admin=True) == {mine.pk}  # as_admin means nothing without is_staff
    assert seen(other) == {theirs.pk}
    assert seen(staff) == set()
    assert seen(staff, as_admin=True) == {mine.pk, theirs.pk}
    assert set(rows.visible_to(owner).values_list("pk", flat=True)) == {mine.pk}
    assert set(rows.owned_by(other).values_list("pk", flat=True)) == {theirs.pk}
