"""Sites, gateways and meters with their status (online, last seen, firmware, boot count)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from backend.api.state import Services
from backend.errors import BadRequestError, NotFoundError
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
    async def sites(self, influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                    services: NamedDependency[Services]) -> list[SiteOut]:
        """Sites with their number of gateways and meters, and how many are online."""
        devices = await device_statuses(influx, settings, services.registry)
        gateways = gateway_statuses(services.registry, devices)
        names = {g.site for g in gateways} | {d.site for d in devices if d.site}
        return [SiteOut(site=s, gateways=sum(g.site == s for g in gateways),
                        gateways_online=sum(g.site == s and g.online for g in gateways),
                        devices=sum(d.site == s for d in devices),
                        devices_online=sum(d.site == s and d.online for d in devices)) for s in sorted(names)]

    @get("/gateways")
    async def gateways(self, influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                       services: NamedDependency[Services], site: FromQuery[str | None] = None) -> list[GatewayOut]:
        """Gateways (from their retained status), optionally of one site."""
        check_ident(site, "instalação (site)")
        devices = await device_statuses(influx, settings, services.registry)
        return [g for g in gateway_statuses(services.registry, devices) if site is None or g.site == site]

    @get("/devices")
    async def devices(self, influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                      services: NamedDependency[Services], site: FromQuery[str | None] = None,
                      gateway: FromQuery[str | None] = None) -> list[DeviceOut]:
        """Meters with status, optionally filtered by site and gateway."""
        check_ident(site, "instalação (site)")
        check_ident(gateway, "gateway")
        return [d for d in await device_statuses(influx, settings, services.registry)
                if (site is None or d.site == site) and (gateway is None or d.gateway == gateway)]

    @get("/devices/{device:str}")
    async def device(self, device: FromPath[str], influx: NamedDependency[InfluxClient],
                     settings: NamedDependency[Settings], services: NamedDependency[Services]) -> DeviceOut:
        """One meter's status; 404 when the backend has never heard of it."""
        check_device(device)
        found = await device_statuses(influx, settings, services.registry, device)
        if not found:
            raise NotFoundError(f"Medidor {device} desconhecido.")
        return found[0]
