"""Access keys with HTTP Signatures, signed by the real ``httpsig`` client (JumpServer's example)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from email.utils import formatdate

import pytest
import requests
from httpsig.requests_auth import HTTPSignatureAuth
from rest_framework.test import APIClient

from accounts import keys
from accounts.models import AccessKey, UsedSignature

pytestmark = pytest.mark.django_db
ME = "/api/v1/users/me/"
TOKENS = "/api/v1/tokens/"
SIGNED = ["(request-target)", "accept", "date"]


def sign(method: str, path: str, key_id, secret: str, *, body=None, headers=None, date=None, digest=None):
    """A ``requests`` request prepared and signed by httpsig, exactly as a JumpServer client does."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Accept": "application/json", "Date": date or formatdate(usegmt=True)}
    if data is not None:
        sent["Content-Type"] = "application/json"
        sent["Digest"] = digest or "SHA-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    prepared = requests.Request(method, f"http://testserver{path}", headers=sent, data=data).prepare()
    auth = HTTPSignatureAuth(key_id=str(key_id), secret=secret, algorithm="hmac-sha256", headers=headers or SIGNED)
    return auth(prepared)


def send(prepared, *, path: str | None = None):
    """Replay a prepared request through the Django test client (optionally to another path)."""
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in prepared.headers.items()}
    meta.pop("HTTP_CONTENT_TYPE", None)
    meta.pop("HTTP_CONTENT_LENGTH", None)
    target = path or prepared.path_url
    return APIClient().generic(
        prepared.method, target, prepared.body or b"", content_type=prepared.headers.get("Content-Type"), **meta
    )


@pytest.fixture
def key(owner):
    row, secret = keys.create(owner, label="laptop")
    return row, secret


def test_signed_get_authenticates(key):
    row, secret = key
    response = send(sign("GET", ME, row.id, secret))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["auth_method"] == "signature"


def test_signed_post_with_digest_authenticates(key):
    row, secret = key
    response = send(sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=[*SIGNED, "digest"]))
    assert response.status_code == 201, response.json()


def test_query_string_is_part_of_the_request_target(key):
    row, secret = key
    assert send(sign("GET", "/api/v1/requests/?limit=5", row.id, secret)).status_code == 200


def test_wrong_secret_and_unknown_key_answer_identically(key):
    row, _ = key
    wrong = send(sign("GET", ME, row.id, "not-the-secret"))
    unknown = send(sign("GET", ME, "3f0b6c1e-4d7a-4a55-9f7e-2c1d8e9a0b11", "not-the-secret"))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"error": "Invalid signature"}


def test_tampered_path_is_401(key):
    row, secret = key
    assert send(sign("GET", ME, row.id, secret), path="/api/v1/tokens/").status_code == 401


def test_stale_date_is_401(key):
    row, secret = key
    response = send(sign("GET", ME, row.id, secret, date=formatdate(time.time() - 301, usegmt=True)))
    assert response.status_code == 401
    assert "300 s" in response.json()["error"]


def test_future_date_beyond_skew_is_401(key):
    row, secret = key
    assert send(sign("GET", ME, row.id, secret, date=formatdate(time.time() + 400, usegmt=True))).status_code == 401


def test_replayed_signature_is_401(key):
    row, secret = key
    prepared = sign("GET", ME, row.id, secret)
    assert send(prepared).status_code == 200
    replay = send(prepared)
    assert replay.status_code == 401
    assert "replay" in replay.json()["error"]


def test_body_without_signed_digest_is_401(key):
    row, secret = key
    response = send(sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=SIGNED))
    assert response.status_code == 401
    assert "digest" in response.json()["error"]


def test_wrong_digest_is_401(key):
    row, secret = key
    bad = "SHA-256=" + base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    response = send(sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=[*SIGNED, "digest"], digest=bad))
    assert response.status_code == 401
    assert "Digest" in response.json()["error"]


def test_unsigned_request_target_is_401(key):
    row, secret = key
    assert send(sign("GET", ME, row.id, secret, headers=["date"])).status_code == 401


def test_disabled_key_is_401(key):
    row, secret = key
    AccessKey.objects.filter(pk=row.pk).update(is_active=False)
    assert send(sign("GET", ME, row.id, secret)).status_code == 401


def test_non_hmac_algorithm_is_refused(key):
    row, secret = key
    prepared = sign("GET", ME, row.id, secret)
    prepared.headers["Authorization"] = prepared.headers["Authorization"].replace("hmac-sha256", "rsa-sha256")
    assert send(prepared).status_code == 401


def test_secret_is_encrypted_at_rest(key):
    row, secret = key
    stored = AccessKey.objects.get(pk=row.pk).secret_encrypted
    assert secret not in stored
    assert keys.secret_of(AccessKey.objects.get(pk=row.pk)) == secret


def test_key_scopes_are_enforced(owner):
    row, secret = keys.create(owner, scopes=["read"])
    response = send(sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=[*SIGNED, "digest"]))
    assert response.status_code == 403
    assert "'write'" in response.json()["error"]


def test_prune_forgets_only_signatures_outside_the_window(key):
    from datetime import timedelta

    from django.utils import timezone

    from accounts import signatures

    row, secret = key
    send(sign("GET", ME, row.id, secret))
    UsedSignature.objects.create(signature_digest="0" * 64, seen_at=timezone.now() - timedelta(hours=1))
    assert signatures.prune() == 1
    assert UsedSignature.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_real_http_client_against_live_server(live_server, owner):
    row, secret = keys.create(owner)
    auth = HTTPSignatureAuth(key_id=str(row.id), secret=secret, algorithm="hmac-sha256", headers=SIGNED)
    headers = {"Accept": "application/json", "Date": formatdate(usegmt=True)}
    response = requests.get(f"{live_server.url}{ME}", auth=auth, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize("path", ["/list", "/api/autossh/status"])
def test_a_valid_signature_is_the_originals_401_on_compat_paths(path, key):
    """The compat API accepts ``Bearer`` only, as the original did."""
    row, secret = key
    response = send(sign("GET", path, row.id, secret))
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized", "message": "Valid Bearer token required"}
    assert response["WWW-Authenticate"] == "Bearer"
