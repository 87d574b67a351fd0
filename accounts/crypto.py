"""Encryption at rest for secrets the server must be able to read back.

Access-key secrets are HMAC keys: verifying a signature needs the secret
itself, so it cannot be hashed like a token. It is encrypted with Fernet
under a key derived (HKDF-SHA256) from the token pepper, or SECRET_KEY when
no pepper is set. Changing that server secret makes existing access keys
unusable (they must be re-created); tokens rotate via pepper ids instead.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


@functools.lru_cache(maxsize=4)
def _fernet(master: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tunnelsite access-key secrets v1").derive(
        master.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _current() -> Fernet:
    return _fernet(settings.TOKEN_PEPPER or settings.SECRET_KEY)


def encrypt(plain: str) -> str:
    return _current().encrypt(plain.encode()).decode("ascii")


def decrypt(token: str) -> str | None:
    """The plain secret, or None when it was encrypted under another server secret."""
    try:
        return _current().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        return None
