"""HTTP Signature (draft-cavage, as in JumpServer's access-key examples) checks.

The signing string and the HMAC comparison come from ``httpsig`` (the library
JumpServer's clients use). This module adds the policy JumpServer lacks:

* only HMAC algorithms (an access key is a shared secret);
* ``(request-target)`` and ``date`` must be signed, and ``digest`` too when the
  request has a body; the ``Digest`` header must match the body;
* ``Date`` at most ``MAX_SKEW`` seconds from the server clock;
* a signature is accepted once (replay cache ``UsedSignature``), which is
  sound because a replay outside the Date window already fails the skew check.
  The cache keys on what the server verified, not on how the client spelled it:
  the access key's primary key and the decoded signature bytes. The base64 is
  decoded strictly and must be the canonical encoding, and the key id must be
  the canonical UUID (``SignatureAuthentication``), so neither a re-spelled
  ``keyId`` nor a stray character after the signature makes a replay new.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.http import parse_http_date_safe
from httpsig.utils import parse_signature_header
from httpsig.verify import HeaderVerifier

from accounts.models import UsedSignature

MAX_SKEW = 300
ALGORITHMS = ("hmac-sha256", "hmac-sha512")
DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


class SignatureError(Exception):
    """A refused signature; the message is safe to show the client."""


@dataclass(frozen=True)
class Params:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes  # decoded from the header's canonical base64


def parse(params: str) -> Params:
    """The parameters after ``Signature `` in the Authorization header."""
    values = parse_signature_header(params)
    key_id, signature = values.get("keyid"), values.get("signature")
    if not key_id or not signature:
        raise SignatureError("Signature must carry keyId and signature")
    algorithm = values.get("algorithm", "").lower()
    if algorithm not in ALGORITHMS:
        raise SignatureError(f"Unsupported signature algorithm {algorithm!r}; use hmac-sha256")
    headers = tuple(values.get("headers", "date").lower().split())
    return Params(key_id=key_id, algorithm=algorithm, headers=headers, signature=decode_signature(signature))


def decode_signature(text: str) -> bytes:
    """The signature bytes; only the canonical base64 spelling is accepted.

    ``httpsig`` decodes leniently (characters outside the alphabet are dropped), so
    ``abc…=`` and ``abc…=!`` verify alike; refusing every other spelling here keeps
    one signature one string.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature must be standard base64") from None
    # validate=True still allows spare padding bits and data after "=": re-encoding catches both.
    if not raw or base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError("signature must be standard base64") from None
    return raw


def check_policy(request, params: Params) -> None:
    """Everything that can be checked before knowing the key (so it leaks nothing about keys)."""
    required = ["(request-target)", "date"]
    body = request.body
    if body:
        required.append("digest")
    missing = [name for name in required if name not in params.headers]
    if missing:
        raise SignatureError(f"Signature must cover these headers: {', '.join(missing)}")
    check_date(request.headers.get("Date", ""))
    if body:
        check_digest(request.headers.get("Digest", ""), body)


def check_date(value: str) -> None:
    sent = parse_http_date_safe(value)
    if sent is None or abs(time.time() - sent) > MAX_SKEW:
        raise SignatureError(f"Date header is missing or more than {MAX_SKEW} s from the server clock")


def check_digest(value: str, body: bytes) -> None:
    for item in value.split(","):
        name, _, encoded = item.strip().partition("=")
        algorithm = DIGESTS.get(name.lower())
        if algorithm is None:
            continue
        expected = base64.b64encode(algorithm(body).digest()).decode("ascii")
        if encoded == expected:
            return
        raise SignatureError("Digest header does not match the request body")
    raise SignatureError("Requests with a body need a Digest header (SHA-256=<base64>)")


def signature_matches(request, params: Params, secret: str) -> bool:
    headers = dict(request.headers.items())
    try:
        verifier = HeaderVerifier(
            headers=headers,
            secret=secret,
            required_headers=list(params.headers),
            method=request.method,
            path=request.get_full_path(),
            host=request.headers.get("Host"),
        )
        return bool(verifier.verify())
    except Exception:  # httpsig raises bare Exception for a signed header that is absent
        return False


def claim(key_pk: object, params: Params) -> bool:
    """Record the signature as used by this key; False when it was used before (a replay)."""
    fingerprint = hashlib.sha256(f"{key_pk}\n".encode() + params.signature).hexdigest()
    try:
        with transaction.atomic():  # a savepoint: the IntegrityError must not poison an outer transaction
            UsedSignature.objects.create(signature_digest=fingerprint)
    except IntegrityError:
        return False
    return True


def prune(now=None) -> int:
    """Forget signatures that the Date check would refuse anyway."""
    cutoff = (now or timezone.now()) - timedelta(seconds=2 * MAX_SKEW)
    deleted, _ = UsedSignature.objects.filter(seen_at__lt=cutoff).delete()
    return deleted
