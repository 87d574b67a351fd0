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
import warnings

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.utils import CryptographyDeprecationWarning
from django.conf import settings

from tunnels.models import SshKey

ED25519 = "ed25519"
RSA = "rsa"
RSA_DEFAULT_BITS = 4096
RSA_MIN_GENERATED_BITS = 3072
_INFO = b"tunnelsite ssh private keys v1"


RSA_MIN_UPLOADED_BITS = 2048
ECDSA_CURVES = ("secp256r1", "secp384r1", "secp521r1")
OPENSSH_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
EXPECTED = (
    "expected a private key: OpenSSH (-----BEGIN OPENSSH PRIVATE KEY-----) or PEM "
    "(-----BEGIN PRIVATE KEY-----, -----BEGIN RSA PRIVATE KEY-----, -----BEGIN EC PRIVATE KEY-----)"
)


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
    bits = private_key.key_size if isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else 256
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


# --- uploaded keys -----------------------------------------------------------


class BadKey(ValueError):
    """An uploaded private key we cannot or will not use; the message never quotes the key."""

    def __init__(self, message: str, field: str = "private_key") -> None:
        super().__init__(message)
        self.field = field


DSA_REFUSED = "DSA keys are refused (OpenSSH no longer accepts them): use ed25519, ecdsa or RSA >= 2048 bits"
PUBLIC_STARTS = ("ssh-", "ecdsa-", "sk-", "---- BEGIN SSH2 PUBLIC", "-----BEGIN PUBLIC KEY", "-----BEGIN RSA PUBLIC")


def _looks_public(text: str) -> bool:
    return text.startswith(PUBLIC_STARTS)


def _load(text: str, password: bytes | None):
    data = text.encode("ascii")
    with warnings.catch_warnings():
        # DSA is refused after loading (check_usable); cryptography's deprecation notice is noise here.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        if text.startswith(OPENSSH_BEGIN):
            return serialization.load_ssh_private_key(data, password)
        return serialization.load_pem_private_key(data, password)


def _load_with_passphrase(text: str, passphrase: str | None):
    password = passphrase.encode() if passphrase else None
    try:
        return _load(text, password)
    except TypeError:
        if password is None:
            raise BadKey("this key is protected by a passphrase: send it as passphrase", "passphrase") from None
        return _load(text, None)  # a passphrase for an unprotected key is not needed: ignore it


def parse_private_key(text: object, passphrase: object = None):
    """A cryptography key object from an uploaded OpenSSH or PEM private key (decrypted with
    ``passphrase`` when protected); refuses DSA, RSA under 2048 bits and unsupported types."""
    if not isinstance(text, str) or not text.strip():
        raise BadKey(f"private_key is required: {EXPECTED}")
    if passphrase is not None and not isinstance(passphrase, str):
        raise BadKey("passphrase must be a string", "passphrase")
    text = text.strip().replace("\r\n", "\n") + "\n"
    if _looks_public(text):
        raise BadKey(f"that is a public key; {EXPECTED}")
    if not text.isascii() or "PRIVATE KEY-----" not in text:
        raise BadKey(f"not a private key; {EXPECTED}")
    if "BEGIN DSA PRIVATE KEY" in text:
        raise BadKey(DSA_REFUSED)
    try:
        key = _load_with_passphrase(text, passphrase)
    except BadKey:
        raise
    except UnsupportedAlgorithm:
        raise BadKey("unsupported key type or encryption: use ed25519, ecdsa (nistp256/384/521) or RSA") from None
    except ValueError as exc:
        if passphrase and ("password" in str(exc).lower() or "checksum" in str(exc).lower()):
            raise BadKey("wrong passphrase for this key", "passphrase") from None
        raise BadKey(f"the key could not be read; {EXPECTED}") from None
    except Exception:  # a malformed body must be a 400, whatever the parser raised
        raise BadKey(f"the key could not be read; {EXPECTED}") from None
    check_usable(key)
    return key


def check_usable(key) -> None:
    if isinstance(key, dsa.DSAPrivateKey):
        raise BadKey(DSA_REFUSED)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_UPLOADED_BITS:
            raise BadKey(f"RSA keys must have at least {RSA_MIN_UPLOADED_BITS} bits, this one has {key.key_size}")
        return
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in ECDSA_CURVES:
            raise BadKey(f"ECDSA curve {key.curve.name} is not supported: use nistp256, nistp384 or nistp521")
        return
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BadKey("unsupported key type: use ed25519, ecdsa (nistp256/384/521) or RSA >= 2048 bits")
