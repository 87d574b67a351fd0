"""Issue 11: a captured signed request is accepted once, however its ``keyId`` or signature is re-spelled.

Requests are signed by the real ``httpsig`` client (``tests.test_auth_signature.sign``); each
replay is a POST that would create a token, so "nothing done" is checked on the token table.
"""

from __future__ import annotations

import base64
import re
import uuid

import pytest
import requests

from accounts import keys
from accounts.models import ApiToken
from tests.test_auth_signature import SIGNED, TOKENS, send, sign

pytestmark = pytest.mark.django_db

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def respelled_key_ids(key_id: uuid.UUID) -> list[str]:
    canonical = str(key_id)
    return [canonical.upper(), key_id.hex, f"{{{canonical}}}", f"urn:uuid:{canonical}", key_id.hex.upper()]


def spare_bits_flipped(signature: str) -> str:
    """The same bytes with the unused low bits of the last base64 digit set (lenient decoders agree)."""
    body = signature.rstrip("=")
    last = ALPHABET[ALPHABET.index(body[-1]) ^ 1]
    return body[:-1] + last + signature[len(body) :]


def respelled_signatures(signature: str) -> list[str]:
    return [signature + "!", signature + "=", signature + "*", signature + "\\n", spare_bits_flipped(signature)]


def with_param(prepared, name: str, value: str):
    copy = prepared.copy()
    header = copy.headers["Authorization"]
    copy.headers["Authorization"] = re.sub(rf'{name}="[^"]*"', lambda _: f'{name}="{value}"', header)
    assert copy.headers["Authorization"] != header
    return copy


def signature_of(prepared) -> str:
    return re.search(r'signature="([^"]*)"', prepared.headers["Authorization"]).group(1)


@pytest.fixture
def signed_create(owner):
    row, secret = keys.create(owner, label="laptop")
    prepared = sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=[*SIGNED, "digest"])
    return row, prepared


def replays(row, prepared) -> list:
    variants = [with_param(prepared, "keyId", k) for k in respelled_key_ids(row.id)]
    variants += [with_param(prepared, "signature", s) for s in respelled_signatures(signature_of(prepared))]
    return variants


def test_lenient_decoding_would_have_accepted_every_respelled_signature(signed_create):
    # Guards the test itself: each variant decodes to the genuine bytes under the old lenient decoding.
    _, prepared = signed_create
    genuine = signature_of(prepared)
    for variant in respelled_signatures(genuine):
        assert variant != genuine
        assert base64.b64decode(variant.replace("\\n", "")) == base64.b64decode(genuine)


def test_respelled_replays_are_refused_before_and_after_the_genuine_request(signed_create):
    row, prepared = signed_create
    for variant in replays(row, prepared):
        response = send(variant)
        assert response.status_code == 401, (variant.headers["Authorization"], response.json())
    assert ApiToken.objects.count() == 0

    assert send(prepared).status_code == 201
    assert ApiToken.objects.count() == 1

    for variant in [prepared, *replays(row, prepared)]:
        response = send(variant)
        assert response.status_code == 401, (variant.headers["Authorization"], response.json())
    assert ApiToken.objects.count() == 1


def test_a_non_canonical_key_id_answers_like_an_unknown_key(signed_create):
    row, prepared = signed_create
    answers = {send(with_param(prepared, "keyId", k)).content for k in respelled_key_ids(row.id)}
    assert answers == {b'{"error":"Invalid signature"}'}


def test_a_non_base64_signature_says_so(signed_create):
    _, prepared = signed_create
    response = send(with_param(prepared, "signature", signature_of(prepared) + "!"))
    assert response.status_code == 401
    assert response.json() == {"error": "signature must be standard base64"}


@pytest.mark.django_db(transaction=True)
def test_respelled_replays_over_real_http(live_server, owner):
    """The same over a real socket: a request signed by httpsig, sent by ``requests``, replayed re-spelled."""
    row, secret = keys.create(owner, label="laptop")
    prepared = sign("POST", TOKENS, row.id, secret, body={"label": "x"}, headers=[*SIGNED, "digest"])
    prepared.prepare_url(f"{live_server.url}{TOKENS}", None)
    with requests.Session() as http:
        assert http.send(prepared, timeout=10).status_code == 201
        for variant in [prepared, *replays(row, prepared)]:
            assert http.send(variant, timeout=10).status_code == 401, variant.headers["Authorization"]
    assert ApiToken.objects.filter(user=owner).count() == 1
