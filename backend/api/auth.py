"""Authentication and authorisation: hashed passwords, JWT bearer tokens, role guards.

Roles are ordered ``viewer < operator < admin``: a guard ``requires_role("operator")`` admits operators and
admins. Every route needs at least a valid token (the app-wide :func:`authenticated` guard) unless its handler
is marked ``opt={"public": True}`` (health, readiness, metrics, docs). Users are configured in settings
(``BACKEND_USERS``) with scrypt hashes made by ``python -m backend hash-password``; nothing is stored here.

Use in a controller::

    @get("/algo", guards=[requires_role("operator")])
    async def algo(request: Request) -> ...:
        claims = current_claims(request)  # TokenClaims(sub=..., role=...)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import jwt
import msgspec
from litestar import Request, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody

from backend.api.throttle import LoginThrottle
from backend.errors import ConfigError
from backend.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "admin"]
ROLE_RANK: Final[dict[str, int]] = {"viewer": 1, "operator": 2, "admin": 3}
_ALGORITHM: Final = "HS256"
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_CLAIMS_KEY: Final = "cds_claims"
PUBLIC_PREFIXES: Final = ("/docs",)
"""Paths served without a token besides handlers marked public: the OpenAPI schema and its UI."""


# --- passwords ----------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), the format ``BACKEND_USERS`` expects."""
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
                                dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


# --- tokens ---------------------------------------------------------------------------------------------------


class TokenClaims(msgspec.Struct, frozen=True):
    """What a verified token says: the user and the role."""

    sub: str
    role: str
    exp: int
    iat: int
    iss: str


class TokenRequest(msgspec.Struct, frozen=True):
    username: str
    password: str


class TokenResponse(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str
    expires_in: int
    role: str


class Authenticator:
    """Issues and verifies tokens for one settings object (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._secret = settings.jwt_secret or secrets.token_urlsafe(32)
        self._users = {u.username: u for u in settings.users}
        # A fixed dummy hash so unknown users cost as much time as known ones (no user enumeration).
        self._dummy_hash = hash_password("cds-dummy-password", salt=b"\x00" * 16)
        self.throttle = LoginThrottle()
        # HS256 is as strong as its key: RFC 7518 asks for at least the hash's 256 bits.
        if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
            raise ConfigError("BACKEND_JWT_SECRET must be at least 32 bytes")

    @property
    def secret_is_ephemeral(self) -> bool:
        return not self.settings.jwt_secret

    def login(self, username: str, password: str) -> TokenResponse | None:
        """A token when the credentials match a configured user, else None."""
        user = self._users.get(username)
        ok = verify_password(password, user.password_hash if user else self._dummy_hash)
        if user is None or not ok:
            return None
        return TokenResponse(access_token=self.issue(user.username, user.role), token_type="bearer",
                             expires_in=self.settings.jwt_ttl_s, role=user.role)

    def issue(self, subject: str, role: str, ttl_s: int | None = None) -> str:
        """A signed token for ``subject`` with ``role`` (also used by tests and admin tooling)."""
        if role not in ROLE_RANK:
            raise ValueError(f"unknown role {role!r}")
        now = int(time.time())
        claims = {"sub": subject, "role": role, "iat": now, "exp": now + (ttl_s or self.settings.jwt_ttl_s),
                  "iss": self.settings.jwt_issuer}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; NotAuthorizedException (401, pt-BR) otherwise."""
        try:
            decoded: dict[str, Any] = jwt.decode(token, self._secret, algorithms=[_ALGORITHM],
                                                 issuer=self.settings.jwt_issuer,
                                                 options={"require": ["exp", "iat", "sub", "iss"]})
            claims = msgspec.convert(decoded, TokenClaims)
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthorizedException("Token expirado: solicite um novo em /api/v1/auth/token.") from exc
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise NotAuthorizedException("Token inválido.") from exc
        if claims.role not in ROLE_RANK:
            raise NotAuthorizedException("Token inválido: perfil desconhecido.")
        return claims


# --- guards ---------------------------------------------------------------------------------------------------


def _claims(connection: ASGIConnection[Any, Any, Any, Any]) -> TokenClaims:
    cached = connection.scope.get("state", {}).get(_CLAIMS_KEY)
    if isinstance(cached, TokenClaims):
        return cached
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Autenticação necessária: envie 'Authorization: Bearer <token>'.")
    authenticator: Authenticator = connection.app.state.authenticator
    claims = authenticator.verify(token.strip())
    connection.scope.setdefault("state", {})[_CLAIMS_KEY] = claims
    return claims


def authenticated(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """App-wide guard: a valid token is required unless the handler has ``opt={"public": True}``."""
    if handler.opt.get("public") or connection.url.path.startswith(PUBLIC_PREFIXES):
        return
    _claims(connection)


def requires_role(role: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard admitting tokens whose role is ``role`` or higher (viewer < operator < admin)."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")
    needed = ROLE_RANK[role]

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        claims = _claims(connection)
        if ROLE_RANK[claims.role] < needed:
            raise PermissionDeniedException(f"Permissão insuficiente: requer o perfil '{role}' ou superior.")

    guard.__name__ = f"requires_role_{role}"
    return guard


# --- route ----------------------------------------------------------------------------------------------------


@post("/api/v1/auth/token", opt={"public": True}, tags=["auth"], status_code=200)
async def issue_token(request: Request[Any, Any, Any], data: JSONBody[TokenRequest]) -> TokenResponse:
    """Exchange a configured user's name and password for a bearer token.

    Args:
        data: ``{"username": ..., "password": ...}``.

    Returns:
        ``{"access_token", "token_type": "bearer", "expires_in", "role"}``; 401 when the credentials are wrong.
    """
    authenticator: Authenticator = request.app.state.authenticator
    throttle = authenticator.throttle
    address = request.client.host if request.client else ""
    wait = throttle.retry_after(data.username, address, time.monotonic())
    if wait:
        raise TooManyRequestsException(f"Muitas tentativas de login: tente de novo em {wait} s.",
                                       headers={"Retry-After": str(wait)})
    token = await asyncio.to_thread(authenticator.login, data.username, data.password)  # scrypt is slow
    if token is None:
        throttle.failed(data.username, address, time.monotonic())
        log.warning("login failed", extra={"user": data.username[:64], "address": address})
        raise NotAuthorizedException("Usuário ou senha incorretos.")
    throttle.succeeded(data.username)
    return token
