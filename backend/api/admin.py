"""``/api/v1/admin/...`` (admin only): users, their site grants, and the audit log.

A thin pt-BR layer over :class:`backend.accounts.store.AccountStore`: shape the bodies, pass who is asking and
from where, return the user as the API shows it (never a hash). The store validates, writes the change together
with its audit entry and records refused attempts too. Bootstrap users (``BACKEND_USERS``) are listed but
read-only here. A password left out of a request is generated and returned once, in that answer only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from backend.accounts.audit import MAX_ENTRIES, AuditEntry
from backend.accounts.passwords import generate_password
from backend.accounts.store import AccountStore, UserOut, view
from backend.api.access import actor_of
from backend.api.auth import requires_role
from backend.api.state import services_of
from backend.errors import BadRequestError, DateOutOfRangeError, NotFoundError, UnavailableError
from protocol.timebase import FIRST_DATE, LAST_DATE


class NovoUsuarioIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    usuario: str
    senha: str | None = None
    """Left out: a random password is generated and returned once."""
    perfil: Literal["admin"] | None = None
    """``admin``: every site and the admin endpoints; left out: only the sites in ``sites``."""
    sites: dict[str, str] = {}
    """Site id → ``viewer`` or ``operator``."""


class NovoUsuarioOut(msgspec.Struct, frozen=True):
    usuario: UserOut
    senha_gerada: str | None
    """The generated password (shown this once), or None when the request gave one."""


class SenhaIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    senha: str | None = None


class SenhaOut(msgspec.Struct, frozen=True):
    usuario: str
    senha_gerada: str | None


class PermissaoIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    perfil: str
    """``viewer`` or ``operator`` on the site."""


def _store(request: Request[Any, Any, Any]) -> AccountStore:
    store = services_of(request).accounts
    if store is None:
        raise UnavailableError("Cadastro de usuários ainda não iniciado; tente novamente.")
    return store


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if not FIRST_DATE <= value.date() <= LAST_DATE:
        raise DateOutOfRangeError
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return int(utc.timestamp() * 1000)


ADMIN = [requires_role("admin")]


class AdminController(Controller):
    path = "/api/v1/admin"
    tags = ["administração"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/usuarios", guards=ADMIN)
    async def usuarios(self, request: Request[Any, Any, Any]) -> list[UserOut]:
        """Usuários (os da configuração e os do cadastro), com perfil, sites e situação; nunca a senha."""
        return [view(a) for a in await _store(request).users()]

    @get("/usuarios/{usuario:str}", guards=ADMIN)
    async def usuario(self, request: Request[Any, Any, Any], usuario: FromPath[str]) -> UserOut:
        """Um usuário, com perfil, sites e situação."""
        account = await _store(request).account(usuario)
        if account is None:
            raise NotFoundError(f"Usuário '{usuario[:64]}' não existe.")
        return view(account)

    @post("/usuarios", guards=ADMIN, status_code=201)
    async def criar(self, request: Request[Any, Any, Any], data: JSONBody[NovoUsuarioIn]) -> NovoUsuarioOut:
        """Cria um usuário: administrador, ou com perfil (viewer ou operator) em cada site dado. Sem 'senha', uma
        senha aleatória é gerada e devolvida uma única vez."""
        password = data.senha if data.senha is not None else generate_password()
        account = await _store(request).create(data.usuario, password, admin=data.perfil == "admin",
                                               grants=data.sites,
                                               actor=await actor_of(request))
        return NovoUsuarioOut(usuario=view(account), senha_gerada=None if data.senha is not None else password)

    @post("/usuarios/{usuario:str}/desativar", guards=ADMIN, status_code=200)
    async def desativar(self, request: Request[Any, Any, Any], usuario: FromPath[str]) -> UserOut:
        """Desativa um usuário: o login e os tokens já emitidos deixam de valer (em até BACKEND_ACCOUNTS_REFRESH_S
        nas outras réplicas)."""
        return view(await _store(request).set_disabled(usuario, True, actor=await actor_of(request)))

    @post("/usuarios/{usuario:str}/ativar", guards=ADMIN, status_code=200)
    async def ativar(self, request: Request[Any, Any, Any], usuario: FromPath[str]) -> UserOut:
        """Reativa um usuário desativado."""
        return view(await _store(request).set_disabled(usuario, False, actor=await actor_of(request)))

    @post("/usuarios/{usuario:str}/senha", guards=ADMIN, status_code=200)
    async def senha(self, request: Request[Any, Any, Any], usuario: FromPath[str],
                    data: JSONBody[SenhaIn]) -> SenhaOut:
        """Redefine a senha; sem 'senha', gera uma e a devolve uma única vez."""
        password = data.senha if data.senha is not None else generate_password()
        await _store(request).set_password(usuario, password, actor=await actor_of(request))
        return SenhaOut(usuario=usuario, senha_gerada=None if data.senha is not None else password)

    @put("/usuarios/{usuario:str}/sites/{site:str}", guards=ADMIN)
    async def conceder(self, request: Request[Any, Any, Any], usuario: FromPath[str], site: FromPath[str],
                       data: JSONBody[PermissaoIn]) -> UserOut:
        """Dá ao usuário o perfil 'viewer' ou 'operator' no site (ou troca o que tinha)."""
        return view(await _store(request).grant(usuario, site, data.perfil, actor=await actor_of(request)))

    @delete("/usuarios/{usuario:str}/sites/{site:str}", guards=ADMIN, status_code=200)
    async def revogar(self, request: Request[Any, Any, Any], usuario: FromPath[str], site: FromPath[str]) -> UserOut:
        """Retira a permissão do usuário no site (em até BACKEND_ACCOUNTS_REFRESH_S nas outras réplicas)."""
        return view(await _store(request).revoke(usuario, site, actor=await actor_of(request)))

    @get("/auditoria", guards=ADMIN)
    async def auditoria(self, request: Request[Any, Any, Any], usuario: FromQuery[str | None] = None,
                        inicio: FromQuery[datetime | None] = None, fim: FromQuery[datetime | None] = None,
                        limite: FromQuery[int] = 100) -> list[AuditEntry]:
        """Registro de auditoria, do mais recente ao mais antigo: logins (com ou sem sucesso) e ações de
        administração — quem, o quê, quando, de qual endereço e o resultado. Filtros: usuário (quem agiu ou sobre
        quem), período (ISO 8601; sem fuso = UTC)."""
        if not 1 <= limite <= MAX_ENTRIES:
            raise BadRequestError(f"'limite' deve estar entre 1 e {MAX_ENTRIES}.")
        start, end = _ms(inicio), _ms(fim)
        if start is not None and end is not None and start >= end:
            raise BadRequestError("Período inválido: 'inicio' deve ser anterior a 'fim'.")
        audit = services_of(request).authenticator.audit
        if audit is None:
            raise UnavailableError("Registro de auditoria ainda não iniciado; tente novamente.")
        return await audit.entries(user=usuario[:200] if usuario else None, start_ms=start, end_ms=end,
                                   limit=limite)
