"""Users' SSH keys: generation, encryption at rest, fingerprints.

Private keys are OpenSSH-format text encrypted with Fernet under a key
derived (HKDF-SHA256) from the token pepper (or SECRET_KEY when no pepper is
set). Retired peppers listed in ``TUNNELSITE_TOKEN_OLD_PEPPERS`` still
decrypt, so the server secret can be rotated: set the new pepper, list the
old one, run ``manage.py rotatesshkeys`` to re-encrypt, then drop the old one.
The plaintext only ever goes to the worker's ssh-agent (``tunnels.agent``).
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from tunnels.models import SshKey

ED25519 = "ed25519"
RSA = "rsa"
RSA_DEFAULT_BITS = 4096
RSA_MIN_GENERATED_BITS = 3072
_INFO = b"tunnelsite ssh private keys v1"


class KeyUnavailable(Exception):
    """A stored private key cannot be decrypted with any server secret this process knows."""


# --- encryption at rest -----------------------------------------------------


@functools.lru_cache(maxsize=8)
def _fernet(master: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(master.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _masters() -> list[str]:
    """The current server secret first, then retired peppers that may still decrypt."""
    current = settings.TOKEN_PEPPER or settings.SECRET_KEY
    old = [value for value in settings.TOKEN_OLD_PEPPERS.values() if value and value != current]
    return [current, *old]


def _multi() -> MultiFernet:
    return MultiFernet([_fernet(master) for master in _masters()])


def encrypt(plain: bytes) -> str:
    return _multi().encrypt(plain).decode("ascii")


def decrypt(token: str) -> bytes:
    try:
        return _multi().decrypt(token.encode("ascii"))
    except (InvalidToken, ValueError):
        raise KeyUnavailable("the key was encrypted under a server secret this server no longer has") from None


def reencrypt(token: str) -> str:
    """The same plaintext under the current server secret (for rotation)."""
    try:
        return _multi().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise KeyUnavailable("the key was encrypted under a server secret this server no longer has") from None


# --- public halves -----------------------------------------------------------


def fingerprint(public_line: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def public_line(private_key) -> str:
    """``type base64`` of a cryptography private key object (no comment)."""
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )


def openssh_private(private_key) -> bytes:
    """The unencrypted OpenSSH-format text ssh-add reads."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def new_private_key(algorithm: str = ED25519, bits: int | None = None):
    if algorithm == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == RSA:
        size = bits or RSA_DEFAULT_BITS
        if size < RSA_MIN_GENERATED_BITS or size > 16384:
            raise ValueError(f"RSA keys are generated with {RSA_MIN_GENERATED_BITS} to 16384 bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    raise ValueError(f"unknown algorithm {algorithm!r}: use {ED25519} or {RSA}")


def build(owner, name: str, private_key, comment: str = "") -> SshKey:
    """An unsaved ``SshKey`` row for ``private_key`` (a cryptography key object)."""
    line = public_line(private_key)
    key_type = line.split()[0]
    bits = private_key.key_size if isinstance(private_key, rsa.RSAPrivateKey) else 256
    return SshKey(
        owner=owner,
        name=name,
        algorithm=key_type,
        bits=bits,
        public_key=line,
        fingerprint=fingerprint(line),
        comment=comment,
        private_key_encrypted=encrypt(openssh_private(private_key)),
    )


def private_key_of(key: SshKey) -> bytes:
    """The plaintext private key, for the worker's agent only. Never log or return it."""
    return decrypt(key.private_key_encrypted)


def default_comment(owner, name: str) -> str:
    return f"tunnelsite:{owner.username}:{name}"
