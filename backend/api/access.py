"""Tenancy in the controllers: the sites a request's caller may see, applied the same way by every endpoint.

The rule (docs/api.md, "Sites e permissões"): a site the caller holds no grant on does not exist for them. A
request that names it — a query parameter, a body field, one of its meters, a question — answers 404 with the
same text as for a site or meter that does not exist, and lists leave it out, so nothing tells a tenant which
other sites there are. A site the caller does see but may not act on (a viewer posting readings) answers 403:
its existence is no secret to them. Global roles (admins, bootstrap users, tooling tokens) see every site.

A meter belongs to the site the sites file lists it under, else to the site the device book provisioned it to
(backend/ingest/provisioning.py), else to the site its newest readings are tagged with; a meter of no known
site is visible to global roles only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Request
from litestar.exceptions import PermissionDeniedException

from backend.accounts.access import Caller
from backend.accounts.audit import Action
from backend.accounts.store import Actor
from backend.analytics.service import AnalyticsService
from backend.api.auth import caller_of
from backend.api.state import Services, analytics_service, services_of
from backend.errors import ApiError, NotFoundError


def hidden_site(site: str) -> NotFoundError:
    """The 404 of a site the caller may not see — word for word that of a site that does not exist."""
    return NotFoundError(f"Site '{site[:64]}' não encontrado.")


def hidden_device(device: str) -> NotFoundError:
    """The 404 of a meter of a site the caller may not see — that of a meter nobody knows."""
    return NotFoundError(f"Medidor {device} desconhecido.")


def require_site(caller: Caller, site: str) -> None:
    if not caller.can_see(site):
        raise hidden_site(site)


def require_operator(caller: Caller, site: str) -> None:
    """Posting readings of ``site`` or configuring its meters: 404 when the site is hidden, 403 when only seen."""
    require_site(caller, site)
    if not caller.can_operate(site):
        raise PermissionDeniedException(f"Permissão insuficiente: requer o perfil 'operator' no site '{site}'.")


def device_site(services: Services, device: str, reported: str = "") -> str:
    """The site ``device`` belongs to ("" when unknown): the sites file, the device book, then ``reported``."""
    if services.analytics is not None:
        for cfg in services.analytics.sites.values():
            if device in cfg.devices:
                return cfg.id
    site = services.devices.book.site_of(device) if services.devices is not None else ""
    return site or reported


def sees_device(caller: Caller, services: Services, device: str, reported: str = "") -> bool:
    if caller.sees_all:
        return True
    site = device_site(services, device, reported)
    return bool(site) and caller.can_see(site)


def device_lookup(services: Services) -> Callable[[str], str | None]:
    """:func:`device_site` for the analytics service (None when unknown)."""
    return lambda device: device_site(services, device) or None


async def visible_analytics(request: Request[Any, Any, Any]) -> AnalyticsService:
    """The analytics service as the caller sees it: every site for global roles, else only their sites (every
    scope outside them a 404, questions parsed with their sites' names only)."""
    svc = analytics_service(request)
    visible = (await caller_of(request)).visible()
    if visible is None:
        return svc
    return svc.restricted(visible, device_lookup(services_of(request)))


def address_of(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


async def actor_of(request: Request[Any, Any, Any]) -> Actor:
    return Actor(username=(await caller_of(request)).username, address=address_of(request))


@asynccontextmanager
async def audited(request: Request[Any, Any, Any], action: Action, target: str = "") -> AsyncIterator[None]:
    """Record an admin action that is not a change of the accounts store (those are audited by the store) with its
    outcome: ``ok``, or ``falha`` and the reason when the block raises."""
    actor = await actor_of(request)
    audit = services_of(request).authenticator.audit
    try:
        yield
    except ApiError as exc:
        if audit is not None:
            await audit.record(action, "falha", actor=actor.username, target=target, address=actor.address,
                               detail=exc.detail)
        raise
    except Exception as exc:
        if audit is not None:
            await audit.record(action, "falha", actor=actor.username, target=target, address=actor.address,
                               detail=type(exc).__name__)
        raise
    if audit is not None:
        await audit.record(action, "ok", actor=actor.username, target=target, address=actor.address)
