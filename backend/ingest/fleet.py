"""What a replica knows of the fleet: each gateway's and meter's status from the registry and recent readings.

The device book (``provisioning.py``) says whose each meter is; the registry (``registry.py``) holds what came
over MQTT — gateway status, DeviceInfo, the newest reading forwarded by this replica; the newest raw reading in
InfluxDB fills in what another replica ingested. A meter is online when its gateway is, its serial link is up
and it reported within ``device_online_s``.
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from backend.ingest.provisioning import Book
from backend.ingest.registry import Registry
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import RP_RAW, table

RECENT_WINDOW_MS: Final = 15 * 60_000
"""How far back InfluxDB is asked for each meter's newest reading."""



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


async def recent_readings(influx: InfluxClient, settings: Settings, now_ms: int,
                          device: str | None = None) -> dict[str, Any]:
    """Newest raw reading per device over the 15 minutes before ``now_ms``: its ``time`` (ms), site/gateway tags,
    active power ``p`` and export register ``e`` (one selector, so InfluxDB returns the newest reading's own time
    and fields); a meter seen through two gateways keeps its newest."""
    # no upper bound: a reading stamped a little ahead (a gateway's clock) is still the newest
    where = f"time > {now_ms - RECENT_WINDOW_MS}ms"
    params: dict[str, str] = {}
    if device is not None:
        where += " AND device = $device"
        params["device"] = device
    rows = await influx.rows(f"SELECT last(seq) AS seq, p, energy_export_mwh AS e "
                             f"FROM {table(settings.influx_db, RP_RAW)} WHERE {where} "
                             "GROUP BY device, site, gateway", db=settings.influx_db, params=params)
    return {r["device"]: r for r in sorted(rows, key=lambda r: int(r["time"]))}


async def device_statuses(influx: InfluxClient, settings: Settings, registry: Registry, book: Book,
                          device: str | None = None, recent: dict[str, Any] | None = None,
                          now_ms: int | None = None) -> list[DeviceOut]:
    """Status of every provisioned or recently seen meter (or one): owner, DeviceInfo, gateway status, newest
    reading. A meter's site and gateway are its owner's in the device book; the tags of its newest readings
    only for a meter the book does not know (data stored before it was provisioned). ``recent``: the
    :func:`recent_readings` the caller already has (the dashboard's live power comes from the same read);
    ``now_ms``: the instant "online" is judged at (default: the wall clock)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if recent is None:
        recent = await recent_readings(influx, settings, now, device)
    names = set(registry.devices) | {d for d, r in book.devices.items() if not r.disabled} | set(recent)
    if device is not None:
        names &= {device}
    out = []
    for name in sorted(names):
        state = registry.devices.get(name)
        owner = book.owner(name)
        if owner is not None:
            site, gateway = owner.site, owner.gateway
        elif name in recent:
            site, gateway = recent[name]["site"], recent[name]["gateway"]
        else:
            assert state is not None, "every name comes from the book, recent readings or the registry"
            site, gateway = state.site, state.gateway
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
