"""Sites, gateways and meters with their status (online, last seen, firmware, boot count)."""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from backend.errors import BadRequestError, NotFoundError
from backend.influx import InfluxClient
from backend.registry import Registry
from backend.settings import Settings
from backend.storage import RP_RAW, table
from protocol import ids

DEVICE_PATTERN = r"^[0-9a-f]{16}$"
_DEVICE_RE = re.compile(DEVICE_PATTERN)
_RECENT_WINDOW = "15m"


class DeviceOut(msgspec.Struct):
    device: str
    site: str
    gateway: str
    online: bool
    last_seen_ms: int | None
    firmware: str = ""
    hw_rev: int = 0
    boot: int | None = None
    report_period_ms: int | None = None
    link: str = "unknown"
    port: str = ""


class GatewayOut(msgspec.Struct):
    site: str
    gateway: str
    online: bool
    version: str
    queued: int
    oldest_queued_ms: int
    status_ts: int
    devices: int


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
    if not _DEVICE_RE.fullmatch(device):
        raise BadRequestError("Identificador de medidor inválido: esperados 16 dígitos hexadecimais minúsculos.")


async def recent_readings(influx: InfluxClient, settings: Settings, device: str | None = None) -> dict[str, Any]:
    """Newest raw reading time (ms) per device over the last 15 minutes, with its site/gateway tags."""
    where = f"time > now() - {_RECENT_WINDOW}"
    params: dict[str, str] = {}
    if device is not None:
        where += " AND device = $device"
        params["device"] = device
    rows = await influx.rows(f"SELECT last(seq) FROM {table(settings, RP_RAW)} WHERE {where} "
                             "GROUP BY device, site, gateway", db=settings.influx_db, params=params)
    return {r["device"]: r for r in rows}


async def device_statuses(influx: InfluxClient, settings: Settings, registry: Registry,
                          device: str | None = None) -> list[DeviceOut]:
    """Status of every known meter (or one): DeviceInfo + gateway status + newest reading."""
    recent = await recent_readings(influx, settings, device)
    now = int(time.time() * 1000)
    names = set(registry.devices) | set(registry.device_home) | set(recent)
    if device is not None:
        names &= {device}
    out = []
    for name in sorted(names):
        state = registry.devices.get(name)
        site, gateway = registry.device_home.get(name, ("", ""))
        if name in recent:
            site, gateway = recent[name]["site"], recent[name]["gateway"]
        seen = [t for t in (state.info.seen_at if state else 0, registry.last_reading_ms.get(name, 0),
                            recent[name]["time"] if name in recent else 0) if t]
        last_seen = max(seen) if seen else None
        gw = registry.gateways.get((site, gateway))
        gw_online = gw.status.online if gw else name in recent
        link_up = state is None or state.info.link == "up"
        online = bool(gw_online and link_up and last_seen and now - last_seen <= settings.device_online_s * 1000)
        d = DeviceOut(device=name, site=site, gateway=gateway, online=online, last_seen_ms=last_seen)
        if state is not None:
            i = state.info
            d.firmware, d.hw_rev, d.boot, d.report_period_ms, d.link, d.port = (
                i.firmware, i.hw_rev, i.boot, i.report_period_ms, i.link, i.port)
        out.append(d)
    return out


def gateway_statuses(registry: Registry, devices: list[DeviceOut]) -> list[GatewayOut]:
    counts: dict[tuple[str, str], int] = {}
    for d in devices:
        counts[(d.site, d.gateway)] = counts.get((d.site, d.gateway), 0) + 1
    out = []
    for (site, gw), state in sorted(registry.gateways.items()):
        st = state.status
        out.append(GatewayOut(site=site, gateway=gw, online=st.online, version=st.version, queued=st.queued,
                              oldest_queued_ms=st.oldest_queued_ms, status_ts=st.ts,
                              devices=counts.get((site, gw), 0)))
    return out


class DevicesController(Controller):
    """Read-only views for any authenticated user (viewer and up)."""

    path = "/api/v1"
    tags = ["dispositivos"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/sites")
    async def sites(self, influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                    services: NamedDependency[Any]) -> list[SiteOut]:
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
                       services: NamedDependency[Any], site: FromQuery[str | None] = None) -> list[GatewayOut]:
        """Gateways (from their retained status), optionally of one site."""
        check_ident(site, "instalação (site)")
        devices = await device_statuses(influx, settings, services.registry)
        return [g for g in gateway_statuses(services.registry, devices) if site is None or g.site == site]

    @get("/devices")
    async def devices(self, influx: NamedDependency[InfluxClient], settings: NamedDependency[Settings],
                      services: NamedDependency[Any], site: FromQuery[str | None] = None,
                      gateway: FromQuery[str | None] = None) -> list[DeviceOut]:
        """Meters with status, optionally filtered by site and gateway."""
        check_ident(site, "instalação (site)")
        check_ident(gateway, "gateway")
        return [d for d in await device_statuses(influx, settings, services.registry)
                if (site is None or d.site == site) and (gateway is None or d.gateway == gateway)]

    @get("/devices/{device:str}")
    async def device(self, device: FromPath[str], influx: NamedDependency[InfluxClient],
                     settings: NamedDependency[Settings], services: NamedDependency[Any]) -> DeviceOut:
        """One meter's status; 404 when the backend has never heard of it."""
        check_device(device)
        found = await device_statuses(influx, settings, services.registry, device)
        if not found:
            raise NotFoundError(f"Medidor {device} desconhecido.")
        return found[0]
