"""Sites, gateways and meters with their status (online, last seen, firmware, boot count), of the caller's sites
only (backend/api/access.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from backend.api.access import hidden_device, require_site, sees_device
from backend.api.auth import caller_of
from backend.api.state import Services, book_of
from backend.errors import BadRequestError
from backend.ingest.fleet import DeviceOut, GatewayOut, device_statuses, gateway_statuses
from backend.settings import Settings
from backend.store.influx import InfluxClient
from protocol import ids


class SiteOut(msgspec.Struct):
    site: str
    gateways: int
    gateways_online: int
    devices: int
    devices_online: int


def check_ident(value: str | None, what: str) -> None:
    if value is not None and not ids.is_ident(value):
        raise BadRequestError(f"Identificador de {what} inválido: use letras minúsculas, dígitos, '_' ou '-'.")


def check_device(device: str) -> None:
    if not ids.is_device_id(device):
        raise BadRequestError("Identificador de medidor inválido: esperados 16 dígitos hexadecimais minúsculos.")



class DevicesController(Controller):
    """Read-only views for any authenticated user (viewer and up)."""

    path = "/api/v1"
    tags = ["dispositivos"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/sites")
    async def sites(self, request: Request[Any, Any, Any], influx: NamedDependency[InfluxClient],
                    settings: NamedDependency[Settings], services: NamedDependency[Services]) -> list[SiteOut]:
        """Sites do usuário, com o número de gateways e medidores e quantos estão online."""
        caller = await caller_of(request)
        devices = [d for d in await device_statuses(influx, settings, services.registry, book_of(services))
                   if sees_device(caller, services, d.device, d.site)]
        gateways = [g for g in gateway_statuses(services.registry, devices) if caller.can_see(g.site)]
        names = {g.site for g in gateways} | {d.site for d in devices if d.site and caller.can_see(d.site)}
        return [SiteOut(site=s, gateways=sum(g.site == s for g in gateways),
                        gateways_online=sum(g.site == s and g.online for g in gateways),
                        devices=sum(d.site == s for d in devices),
                        devices_online=sum(d.site == s and d.online for d in devices)) for s in sorted(names)]

    @get("/gateways")
    async def gateways(self, request: Request[Any, Any, Any], influx: NamedDependency[InfluxClient],
                       settings: NamedDependency[Settings], services: NamedDependency[Services],
                       site: FromQuery[str | None] = None) -> list[GatewayOut]:
        """Gateways, de todos os sites do usuário ou de um: online, versão, fila e idade da medição mais antiga na
        fila (do status retido de cada gateway)."""
        check_ident(site, "instalação (site)")
        caller = await caller_of(request)
        if site is not None:
            require_site(caller, site)
        devices = await device_statuses(influx, settings, services.registry, book_of(services))
        return [g for g in gateway_statuses(services.registry, devices)
                if (site is None or g.site == site) and caller.can_see(g.site)]

    @get("/devices")
    async def devices(self, request: Request[Any, Any, Any], influx: NamedDependency[InfluxClient],
                      settings: NamedDependency[Settings], services: NamedDependency[Services],
                      site: FromQuery[str | None] = None, gateway: FromQuery[str | None] = None) -> list[DeviceOut]:
        """Medidores do usuário com seu estado, opcionalmente de um site e de um gateway.

        Online, visto por último, firmware, revisão do hardware, boots, período de envio e enlace."""
        check_ident(site, "instalação (site)")
        check_ident(gateway, "gateway")
        caller = await caller_of(request)
        if site is not None:
            require_site(caller, site)
        return [d for d in await device_statuses(influx, settings, services.registry, book_of(services))
                if (site is None or d.site == site) and (gateway is None or d.gateway == gateway)
                and sees_device(caller, services, d.device, d.site)]

    @get("/devices/{device:str}")
    async def device(self, request: Request[Any, Any, Any], device: FromPath[str],
                     influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                     services: NamedDependency[Services]) -> DeviceOut:
        """Estado de um medidor; 404 quando o backend nunca ouviu falar dele (ou ele é de um site que o usuário não
        vê)."""
        check_device(device)
        found = await device_statuses(influx, settings, services.registry, book_of(services), device)
        if not found or not sees_device(await caller_of(request), services, device, found[0].site):
            raise hidden_device(device)
        return found[0]
