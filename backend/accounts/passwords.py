"""Password hashing shared by the API's login, the accounts store and ``python -m backend hash-password``.

scrypt (RFC 7914) from the standard library: memory-hard, so a stolen hash costs an attacker memory as well as
time per guess, and no extra dependency. The encoded form ``scrypt$N$r$p$salt$hash`` (base64) carries its own
parameters, so they can be raised later without invalidating stored hashes. It lives below the API because the
accounts store writes these hashes and the API only checks them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_MAXMEM: Final = 256 * 1024 * 1024
"""Enough for N up to 2**17 with r = 8; a hash asking for more is treated as malformed instead of eating memory."""
MIN_LENGTH: Final = 8
"""Shortest password an administrator may set through the API (NIST SP 800-63B's minimum)."""
MAX_LENGTH: Final = 256
"""Longest: scrypt's cost does not depend on it, but nobody types more and the body stays small."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), the format ``BACKEND_USERS`` and the accounts store keep."""
    if not password:
        raise ValueError("empty password")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string; False when malformed."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=_MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def generate_password() -> str:
    """A random password for an administrator to hand over once: 96 bits, URL-safe, 16 characters."""
    return secrets.token_urlsafe(12)


def password_problem(password: str) -> str | None:
    """Why ``password`` may not be set (pt-BR, for a 400), or None when it may."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return f"A senha deve ter de {MIN_LENGTH} a {MAX_LENGTH} caracteres."
    if not password.isprintable():
        return "A senha não pode conter caracteres de controle."
    return None
