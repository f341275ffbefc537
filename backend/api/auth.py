"""Authentication and authorisation: JWT bearer tokens, the caller behind each, role guards, the login endpoint.

Roles are ordered ``viewer < operator < admin``: a guard ``requires_role("operator")`` admits operators and
admins. Every route needs at least a valid token (the app-wide :func:`authenticated` guard) unless its handler
is marked ``opt={"public": True}`` (health, readiness, metrics, docs).

Two kinds of user log in here. Bootstrap users (``BACKEND_USERS``, hashes from ``python -m backend
hash-password``) get a token whose global role is trusted until it expires, as before tenancy. Users of the
accounts store (``backend/accounts/``) get a token marked ``src: "accounts"`` that carries no rights of its own:
on every request the user's state and site grants are looked up in the store's in-memory copy (reloaded every
``accounts_refresh_s``). Checking per request rather than putting grants in the token is what makes a disabled
user or a revoked grant stop working within seconds instead of at the token's expiry (an hour), and it costs a
dictionary lookup. Which sites a caller may see is then :class:`~backend.accounts.access.Caller`'s business;
the controllers apply it through ``backend/api/access.py``.

Use in a controller::

    @get("/algo", guards=[requires_role("operator")])
    async def algo(request: Request) -> ...:
        caller = await caller_of(request)  # Caller(username=..., role=..., grants=...)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import jwt
import msgspec
from litestar import Request, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody

from backend.accounts.access import ROLE_RANK, Caller, Role
from backend.accounts.audit import AuditLog
from backend.accounts.passwords import hash_password, verify_password
from backend.accounts.store import Account, AccountStore
from backend.api.openapi import errors
from backend.api.throttle import LoginThrottle
from backend.errors import ConfigError, UnavailableError
from backend.settings import Settings

log = logging.getLogger(__name__)

_ALGORITHM: Final = "HS256"
_CALLER_KEY: Final = "cds_caller"
PUBLIC_PREFIXES: Final = ("/docs",)
"""Paths served without a token besides handlers marked public: the OpenAPI schema and its UI."""
Source = Literal["settings", "accounts"]


# --- tokens ---------------------------------------------------------------------------------------------------


class TokenClaims(msgspec.Struct, frozen=True):
    """What a verified token says: the user, the role, and where the user's rights are to be read."""

    sub: str
    role: Role
    exp: int
    iat: int
    iss: str
    src: Source = "settings"
    """``settings``: ``role`` is global and trusted (bootstrap users, tooling); ``accounts``: rights are read from
    the accounts store on each request, ``role`` is informative only."""


class TokenRequest(msgspec.Struct, frozen=True):
    username: str
    password: str


class TokenResponse(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str
    expires_in: int
    role: str
    """The global role; for a user with site grants only, the highest of them."""
    sites: dict[str, str] = {}
    """Site id → role for a user with site grants; empty for global roles (every site)."""


class Authenticator:
    """Issues and verifies tokens for one settings object (one per app); the lifespan attaches the accounts store
    and the audit log once InfluxDB is open."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._secret = settings.jwt_secret or secrets.token_urlsafe(32)
        self._users = {u.username: u for u in settings.users}
        # A fixed dummy hash so unknown users cost as much time as known ones (no user enumeration).
        self._dummy_hash = hash_password("cds-dummy-password", salt=b"\x00" * 16)
        self.throttle = LoginThrottle()
        self.accounts: AccountStore | None = None
        self.audit: AuditLog | None = None
        # HS256 is as strong as its key: RFC 7518 asks for at least the hash's 256 bits.
        if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
            raise ConfigError("BACKEND_JWT_SECRET must be at least 32 bytes")

    @property
    def secret_is_ephemeral(self) -> bool:
        return not self.settings.jwt_secret

    async def login(self, username: str, password: str, address: str) -> TokenResponse | None:
        """A token when the credentials match a bootstrap or a store user (not disabled), else None; audited.

        Raises UnavailableError when the name is not a bootstrap user's and the accounts store cannot be read."""
        user = self._users.get(username)
        account: Account | None = None
        if user is None and self.accounts is not None:
            account = (await self.accounts.accounts()).get(username)
        encoded = user.password_hash if user else account.password_hash if account else self._dummy_hash
        ok = await asyncio.to_thread(verify_password, password, encoded)  # scrypt is slow: not on the loop
        if not ok or (user is None and account is None):
            await self._audit(username, address, "falha", "usuário ou senha incorretos")
            return None
        if account is not None and account.disabled:
            await self._audit(username, address, "negado", "usuário desativado")
            return None
        await self._audit(username, address, "ok", "")
        ttl = self.settings.jwt_ttl_s
        if user is not None:
            return TokenResponse(access_token=self.issue(user.username, user.role), token_type="bearer",
                                 expires_in=ttl, role=user.role)
        assert account is not None
        shown: str = account.role or max(account.grants.values(), key=ROLE_RANK.__getitem__, default="viewer")
        return TokenResponse(access_token=self.issue(account.username, account.role or "viewer", src="accounts"),
                             token_type="bearer", expires_in=ttl, role=shown, sites=dict(account.grants))

    async def _audit(self, username: str, address: str, outcome: Literal["ok", "falha", "negado"],
                     detail: str) -> None:
        if self.audit is not None:
            await self.audit.record("login", outcome, actor=username, address=address, detail=detail)

    def issue(self, subject: str, role: str, ttl_s: int | None = None, *, src: Source = "settings") -> str:
        """A signed token for ``subject`` with ``role`` (also used by tests and admin tooling: a ``settings``
        token's role is global, so tooling tokens see every site)."""
        if role not in ROLE_RANK:
            raise ValueError(f"unknown role {role!r}")
        now = int(time.time())
        claims = {"sub": subject, "role": role, "iat": now, "exp": now + (ttl_s or self.settings.jwt_ttl_s),
                  "iss": self.settings.jwt_issuer, "src": src}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; NotAuthorizedException (401, pt-BR) otherwise."""
        try:
            decoded: dict[str, Any] = jwt.decode(token, self._secret, algorithms=[_ALGORITHM],
                                                 issuer=self.settings.jwt_issuer,
                                                 options={"require": ["exp", "iat", "sub", "iss"]})
            return msgspec.convert(decoded, TokenClaims)
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthorizedException("Token expirado: solicite um novo em /api/v1/auth/token.") from exc
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise NotAuthorizedException("Token inválido.") from exc

    async def caller(self, claims: TokenClaims) -> Caller:
        """Who holds the token, with the rights they have now (401 for a disabled or removed store user)."""
        if claims.src == "settings":
            return Caller(username=claims.sub, role=claims.role)
        if self.accounts is None:
            raise UnavailableError("Cadastro de usuários ainda não iniciado; tente novamente.")
        caller = await self.accounts.caller(claims.sub)
        if caller is None:
            raise NotAuthorizedException("Usuário desativado ou removido.")
        return caller


# --- guards ---------------------------------------------------------------------------------------------------


async def _caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    state = connection.scope.setdefault("state", {})
    cached = state.get(_CALLER_KEY)
    if isinstance(cached, Caller):
        return cached
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Autenticação necessária: envie 'Authorization: Bearer <token>'.")
    authenticator: Authenticator = connection.app.state.authenticator
    caller = await authenticator.caller(authenticator.verify(token.strip()))
    state[_CALLER_KEY] = caller
    return caller


async def caller_of(request: Request[Any, Any, Any]) -> Caller:
    """The caller of an authenticated request (resolved once per request by the guards)."""
    return await _caller(request)


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """App-wide guard: a valid token is required unless the handler has ``opt={"public": True}``."""
    if handler.opt.get("public") or connection.url.path.startswith(PUBLIC_PREFIXES):
        return
    await _caller(connection)


def requires_role(role: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard admitting callers whose role is ``role`` or higher (viewer < operator < admin). A caller with site
    grants passes an operator guard when operator somewhere (the handler then checks the site) and never an
    admin guard."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not (await _caller(connection)).has(role):
            raise PermissionDeniedException(f"Permissão insuficiente: requer o perfil '{role}' ou superior.")

    guard.__name__ = f"requires_role_{role}"
    return guard


# --- route ----------------------------------------------------------------------------------------------------


@post("/api/v1/auth/token", opt={"public": True}, tags=["auth"], status_code=200, responses=errors(401, 429, 503))
async def issue_token(request: Request[Any, Any, Any], data: JSONBody[TokenRequest]) -> TokenResponse:
    """Troca o nome e a senha de um usuário por um token Bearer (JWT).

    401 quando a senha está errada, o usuário não existe ou está desativado (a mesma resposta: quem tenta
    adivinhar não aprende nada); 429 com Retry-After depois de tentativas erradas demais (por usuário e por
    endereço); 503 quando o cadastro de usuários não pode ser lido.
    """
    authenticator: Authenticator = request.app.state.authenticator
    throttle = authenticator.throttle
    address = request.client.host if request.client else ""
    wait = throttle.retry_after(data.username, address, time.monotonic())
    if wait:
        raise TooManyRequestsException(f"Muitas tentativas de login: tente de novo em {wait} s.",
                                       headers={"Retry-After": str(wait)})
    token = await authenticator.login(data.username, data.password, address)
    if token is None:
        throttle.failed(data.username, address, time.monotonic())
        log.warning("login failed", extra={"user": data.username[:64], "address": address})
        raise NotAuthorizedException("Usuário ou senha incorretos.")
    throttle.succeeded(data.username)
    return token
