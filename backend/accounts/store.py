"""The accounts store: API users, their site grants and their state, shared by every replica through InfluxDB.

Why InfluxDB: it is the backend's only shared state. Replicas hold nothing of their own (docs/architecture.md),
so users created on one replica must work on all of them, and adding a second database engine (SQLite on a shared
volume, Postgres) for a few hundred rows would add a component to run, back up and secure. The data is tiny and
changes rarely, which suits InfluxDB's model once every write is an idempotent point:

* ``account_user`` — one point per user at time 0, tag ``username``; fields ``hash`` (scrypt), ``role``
  (``admin`` or empty), ``disabled``, ``created_ms``, ``changed_ms``. A change rewrites the whole point, and a
  point is keyed by measurement + tags + time, so it overwrites the previous state (last write wins).
* ``account_grant`` — one point per (user, site) at time 0, tags ``username`` and ``site``; field ``role``
  (``viewer``, ``operator``, or empty once revoked: InfluxDB has no cheap per-point delete, a tombstone is a write
  like any other and is idempotent too).
* ``account_audit`` — the audit log (audit.py), written in the same ``/write`` request as the change it records.

All of it lives in a database of its own (``Settings.resolved_accounts_db()``, retention policy ``accounts``,
kept forever), so the admin's InfluxQL console, whose InfluxDB user may read the readings' database only, never
sees a password hash.

Consistency: each replica keeps the whole store in memory and reloads it when a request needs it and the copy is
older than ``accounts_refresh_s`` (5 s by default), and right after its own changes. So a change made on one
replica takes effect there at once and on every other replica within ``accounts_refresh_s`` (a reload that was
already reading when the change was written does not count as fresh: it may have missed it): that is the window
in which a disabled user or a revoked grant may still be served elsewhere. Two administrators changing the same
user at the same moment on two replicas: the later write wins, and both changes are in the audit log. When
InfluxDB cannot be read and the copy is stale, users of the store are refused (503) rather than served from an
old copy; the bootstrap users of ``BACKEND_USERS`` keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Final, NoReturn

import msgspec

from backend.accounts.access import Caller, Role, SiteRole
from backend.accounts.audit import Action, AuditLog, audit_line
from backend.accounts.passwords import hash_password, password_problem
from backend.errors import ApiError, BadRequestError, InfluxError, InfluxQueryError, NotFoundError, UnavailableError
from backend.settings import Settings
from backend.store.influx import InfluxClient, quote_ident
from backend.store.layout import ACCOUNT_GRANT, ACCOUNT_USER, RP_ACCOUNTS, ensure_policy, table
from backend.store.lineprotocol import point
from protocol import ids

log = logging.getLogger(__name__)

USERNAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
"""A store user's name: it becomes a tag value, so it is short and plain (bootstrap users are not bound by it)."""
RETRY_AFTER_FAILURE_S: Final = 1.0
"""After a failed load, requests are refused for this long before the next attempt (no stampede on InfluxDB)."""
_GLOBAL_ROLES: Final[dict[str, Role]] = {"viewer": "viewer", "operator": "operator", "admin": "admin"}
_SITE_ROLES: Final[dict[str, SiteRole]] = {"viewer": "viewer", "operator": "operator"}
UNAVAILABLE: Final = "Cadastro de usuários indisponível no momento; tente novamente."


class Account(msgspec.Struct, frozen=True):
    """A user as stored (or as configured, for a bootstrap user)."""

    username: str
    password_hash: str
    role: Role | None
    """Global role; None for a user with site grants only. Store users are ``admin`` or None."""
    disabled: bool = False
    grants: dict[str, SiteRole] = {}
    created_ms: int = 0
    changed_ms: int = 0
    bootstrap: bool = False
    """Configured in ``BACKEND_USERS``: read-only through the API."""

    def caller(self) -> Caller:
        return Caller(username=self.username, role=self.role, grants=dict(self.grants))


class UserOut(msgspec.Struct, frozen=True):
    """A user as the admin API shows it: never the hash."""

    usuario: str
    perfil: str | None
    """Global role (``admin``; for bootstrap users also ``viewer`` or ``operator``), or None: sites only."""
    sites: dict[str, str]
    desativado: bool
    origem: str
    """``cadastro`` (this store) or ``configuracao`` (``BACKEND_USERS``, read-only here)."""
    criado_em_ms: int | None
    alterado_em_ms: int | None


def view(account: Account) -> UserOut:
    return UserOut(usuario=account.username, perfil=account.role, sites=dict(sorted(account.grants.items())),
                   desativado=account.disabled, origem="configuracao" if account.bootstrap else "cadastro",
                   criado_em_ms=account.created_ms or None, alterado_em_ms=account.changed_ms or None)


class Actor(msgspec.Struct, frozen=True):
    """Who asks for a change, and from where (for the audit log)."""

    username: str
    address: str


def _user_line(a: Account) -> str:
    return point(ACCOUNT_USER, {"username": a.username},
                 {"hash": a.password_hash, "role": a.role or "", "disabled": a.disabled, "created_ms": a.created_ms,
                  "changed_ms": a.changed_ms}, 0)


def _grant_line(username: str, site: str, role: str, changed_ms: int) -> str:
    return point(ACCOUNT_GRANT, {"username": username, "site": site}, {"role": role, "changed_ms": changed_ms}, 0)


class AccountStore:
    """Users and grants of the accounts database, cached in memory; every change audited."""

    def __init__(self, influx: InfluxClient, settings: Settings, audit: AuditLog) -> None:
        self.influx = influx
        self.db = settings.resolved_accounts_db()
        self.refresh_s = settings.accounts_refresh_s
        self.audit = audit
        self.bootstrap = {u.username: Account(username=u.username, password_hash=u.password_hash,
                                              role=_GLOBAL_ROLES[u.role], bootstrap=True)
                          for u in settings.users}
        self._accounts: dict[str, Account] = {}
        self._loaded_at: float | None = None
        self._changes = 0
        """Changes this replica wrote (or re-reads it asked for): a reload that began before the last one is stale."""
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def ensure_schema(self) -> None:
        await self.influx.execute(f"CREATE DATABASE {quote_ident(self.db)}", epoch=None)
        await ensure_policy(self.influx, self.db, RP_ACCOUNTS, "DURATION INF REPLICATION 1")

    # --- reading -------------------------------------------------------------------------------------------

    def _fresh(self) -> bool:
        return self._loaded_at is not None and time.monotonic() - self._loaded_at < self.refresh_s

    async def accounts(self) -> dict[str, Account]:
        """The store's users (not the bootstrap ones), reloaded when older than ``accounts_refresh_s``.

        Raises UnavailableError (503) when the copy is stale and InfluxDB cannot be read."""
        if self._fresh():
            return self._accounts
        async with self._lock:  # one reload at a time; the others then find it fresh
            if self._fresh():
                return self._accounts
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_S:
                raise UnavailableError(UNAVAILABLE)
            changes = self._changes
            try:
                self._accounts = await self._load()
            except InfluxError as exc:
                self._failed_at = time.monotonic()
                log.error("accounts not loaded", extra={"db": self.db, "error": str(exc)[:300]})
                raise UnavailableError(UNAVAILABLE) from exc
            self._failed_at = None
            # Read while a change of this replica was being written: maybe without it, so not fresh. The change's
            # own reload (waiting on the lock) reads again, and serves it at once as promised.
            self._loaded_at = time.monotonic() if changes == self._changes else None
        return self._accounts

    def _stale(self) -> None:
        """The copy may miss a change just written (or one to be read afresh): the next request reloads."""
        self._loaded_at = None
        self._changes += 1

    async def _load(self) -> dict[str, Account]:
        try:
            users = await self.influx.rows(f'SELECT * FROM {self._t(ACCOUNT_USER)} GROUP BY "username"', db=self.db)
            grants = await self.influx.rows(f'SELECT * FROM {self._t(ACCOUNT_GRANT)} GROUP BY "username", "site"',
                                            db=self.db)
        except InfluxQueryError as exc:
            if "database not found" in str(exc):
                return {}  # nothing was ever stored (and the schema is not managed by this replica)
            raise
        by_user: dict[str, dict[str, SiteRole]] = {}
        for g in grants:
            role = g.get("role") or ""
            if role in _SITE_ROLES:
                by_user.setdefault(g["username"], {})[g["site"]] = _SITE_ROLES[role]
        out = {}
        for u in users:
            name = u["username"]
            out[name] = Account(username=name, password_hash=u.get("hash") or "",
                                role="admin" if u.get("role") == "admin" else None,
                                disabled=bool(u.get("disabled")), grants=by_user.get(name, {}),
                                created_ms=int(u.get("created_ms") or 0), changed_ms=int(u.get("changed_ms") or 0))
        return out

    def _t(self, measurement: str) -> str:
        return table(self.db, RP_ACCOUNTS, measurement)

    async def account(self, username: str) -> Account | None:
        """A bootstrap user or a store user by name (None when neither)."""
        if username in self.bootstrap:
            return self.bootstrap[username]
        return (await self.accounts()).get(username)

    async def caller(self, username: str) -> Caller | None:
        """What a store user may do now; None when the user is unknown or disabled."""
        account = (await self.accounts()).get(username)
        if account is None or account.disabled:
            return None
        return account.caller()

    async def users(self) -> list[Account]:
        """Bootstrap users, then the store's, by name."""
        stored = await self.accounts()
        return [*sorted(self.bootstrap.values(), key=lambda a: a.username),
                *(stored[k] for k in sorted(stored) if k not in self.bootstrap)]

    # --- changes (each one audited in the same write) -------------------------------------------------------

    async def create(self, username: str, password: str, *, admin: bool, grants: Mapping[str, str],
                     actor: Actor) -> Account:
        """A new user: a global admin, or a user with site grants (possibly none yet)."""
        action: Action = "criar_usuario"
        if not USERNAME_RE.fullmatch(username):
            await self._refuse(action, actor, username[:64], BadRequestError(
                "Nome de usuário inválido: de 2 a 64 letras minúsculas, dígitos, '.', '_' ou '-', começando por "
                "letra ou dígito."))
        if (problem := password_problem(password)) is not None:
            await self._refuse(action, actor, username, BadRequestError(problem))
        if admin and grants:
            await self._refuse(action, actor, username, BadRequestError(
                "Um administrador vê todos os sites: não informe 'sites' junto com o perfil 'admin'."))
        for site, role in grants.items():
            await self._check_grant(action, actor, username, site, role)
        if username in self.bootstrap or username in await self.accounts():
            await self._refuse(action, actor, username, ApiError(f"O usuário '{username}' já existe.",
                                                                 status_code=409))
        now = int(time.time() * 1000)
        account = Account(username=username, password_hash=await asyncio.to_thread(hash_password, password),
                          role="admin" if admin else None, grants={s: _SITE_ROLES[r] for s, r in grants.items()},
                          created_ms=now, changed_ms=now)
        lines = [_user_line(account), *(_grant_line(username, s, r, now) for s, r in grants.items())]
        detail = "perfil=admin" if admin else "sites=" + ",".join(f"{s}:{r}" for s, r in sorted(grants.items()))
        await self._commit(lines, action, actor, username, detail)
        return account

    async def set_disabled(self, username: str, disabled: bool, *, actor: Actor) -> Account:
        action: Action = "desativar_usuario" if disabled else "ativar_usuario"
        current = await self._stored(action, actor, username)
        if disabled and username == actor.username:
            await self._refuse(action, actor, username, BadRequestError("Você não pode desativar o próprio usuário."))
        updated = msgspec.structs.replace(current, disabled=disabled, changed_ms=int(time.time() * 1000))
        await self._commit([_user_line(updated)], action, actor, username, "")
        return updated

    async def set_password(self, username: str, password: str, *, actor: Actor) -> Account:
        action: Action = "redefinir_senha"
        current = await self._stored(action, actor, username)
        if (problem := password_problem(password)) is not None:
            await self._refuse(action, actor, username, BadRequestError(problem))
        updated = msgspec.structs.replace(current, password_hash=await asyncio.to_thread(hash_password, password),
                                          changed_ms=int(time.time() * 1000))
        await self._commit([_user_line(updated)], action, actor, username, "")
        return updated

    async def grant(self, username: str, site: str, role: str, *, actor: Actor) -> Account:
        action: Action = "conceder_site"
        current = await self._stored(action, actor, username)
        await self._check_grant(action, actor, username, site, role)
        if current.role is not None:
            await self._refuse(action, actor, username, ApiError(
                f"'{username}' é administrador e já vê todos os sites.", status_code=409))
        now = int(time.time() * 1000)
        await self._commit([_grant_line(username, site, role, now)], action, actor, username, f"site={site} "
                           f"perfil={role}")
        return msgspec.structs.replace(current, grants={**current.grants, site: _SITE_ROLES[role]})

    async def revoke(self, username: str, site: str, *, actor: Actor) -> Account:
        action: Action = "revogar_site"
        current = await self._stored(action, actor, username)
        if site not in current.grants:
            await self._refuse(action, actor, username, NotFoundError(
                f"O usuário '{username}' não tem permissão no site '{site[:64]}'."))
        now = int(time.time() * 1000)
        await self._commit([_grant_line(username, site, "", now)], action, actor, username, f"site={site}")
        return msgspec.structs.replace(current, grants={s: r for s, r in current.grants.items() if s != site})

    async def _check_grant(self, action: Action, actor: Actor, username: str, site: str, role: str) -> None:
        if not ids.is_ident(site):
            await self._refuse(action, actor, username, BadRequestError(
                "Identificador de site inválido: use letras minúsculas, dígitos, '_' ou '-'."))
        if role not in _SITE_ROLES:
            await self._refuse(action, actor, username, BadRequestError(
                "Perfil no site deve ser 'viewer' ou 'operator'."))

    async def _stored(self, action: Action, actor: Actor, username: str) -> Account:
        """The store user ``username``, read fresh from InfluxDB (a change starts from the current state)."""
        if username in self.bootstrap:
            await self._refuse(action, actor, username, ApiError(
                f"'{username}' é um usuário da configuração (BACKEND_USERS): altere-o na configuração do servidor.",
                status_code=409))
        self._stale()
        account = (await self.accounts()).get(username)
        if account is None:
            await self._refuse(action, actor, username[:64], NotFoundError(f"Usuário '{username[:64]}' não existe."))
        return account

    async def _refuse(self, action: Action, actor: Actor, target: str, exc: ApiError) -> NoReturn:
        await self.audit.record(action, "falha", actor=actor.username, target=target, address=actor.address,
                                detail=exc.detail)
        raise exc

    async def _commit(self, lines: list[str], action: Action, actor: Actor, target: str, detail: str) -> None:
        """The change and its audit entry in one write, then a reload so this replica serves it at once."""
        entry = audit_line(action, "ok", actor=actor.username, target=target, address=actor.address, detail=detail)
        await self.audit.write([*lines, entry])
        log.info("audit", extra={"audit_action": action, "outcome": "ok", "user": actor.username, "target": target,
                                 "address": actor.address, "detail": detail})
        self._stale()
        with contextlib.suppress(UnavailableError):  # stored; the next request reloads
            await self.accounts()
