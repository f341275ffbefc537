"""Readings of one meter over a period, raw or from the 1-minute / 1-hour rollups; a meter of a site the caller
may not see is a 404 (backend/api/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from backend.api.access import device_site, hidden_device
from backend.api.auth import caller_of
from backend.api.devices import check_device
from backend.api.state import Services
from backend.errors import BadRequestError, DateOutOfRangeError
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import RP_1H, RP_1M, RP_RAW, table
from protocol.timebase import FIRST_DATE, LAST_DATE

Resolution = Literal["auto", "raw", "1m", "1h"]
AUTO_RAW_MAX: Final = timedelta(hours=6)
AUTO_1M_MAX: Final = timedelta(days=7)
MAX_SPAN: Final = timedelta(days=3660)
_RP: Final = {"raw": RP_RAW, "1m": RP_1M, "1h": RP_1H}


class ReadingsOut(msgspec.Struct):
    device: str
    resolution: str
    start: datetime
    end: datetime
    count: int
    points: list[dict[str, Any]]
    """``time`` (ms since the epoch, start of the bucket for rollups) plus the fields of the resolution."""


def choose_resolution(span: timedelta, requested: Resolution) -> str:
    """``auto``: raw up to 6 h, 1-minute rollups up to 7 days, hourly beyond."""
    if requested != "auto":
        return requested
    if span <= AUTO_RAW_MAX:
        return "raw"
    return "1m" if span <= AUTO_1M_MAX else "1h"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ReadingsController(Controller):
    path = "/api/v1/devices"
    tags = ["medições"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/{device:str}/readings")
    async def readings(
        self,
        request: Request[Any, Any, Any],
        device: FromPath[str],
        influx: NamedDependency[InfluxClient],
        settings: NamedDependency[Settings],
        services: NamedDependency[Services],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        resolution: FromQuery[Resolution] = "auto",
    ) -> ReadingsOut:
        """Readings of ``device`` in [start, end).

        Args:
            start: ISO 8601 (default: one hour before ``end``); naive times are UTC.
            end: ISO 8601 (default: now).
            resolution: ``raw``, ``1m``, ``1h`` or ``auto`` (raw up to 6 h, 1m up to 7 days, else 1h).

        Returns:
            The points in time order; 400 (pt-BR) for a bad id, an empty or huge period, or too many points.
        """
        check_device(device)
        caller = await caller_of(request)
        site = device_site(services, device)
        if not caller.sees_all and not (site and caller.can_see(site)):
            raise hidden_device(device)
        # Checked before any arithmetic: a year-1 or year-9999 time would overflow it, and InfluxDB stops at 2262.
        if not all(FIRST_DATE <= t.date() <= LAST_DATE for t in (start, end) if t is not None):
            raise DateOutOfRangeError
        end_utc = _utc(end) if end else datetime.now(UTC)
        start_utc = _utc(start) if start else end_utc - timedelta(hours=1)
        if start_utc >= end_utc:
            raise BadRequestError("Período inválido: 'start' deve ser anterior a 'end'.")
        if end_utc - start_utc > MAX_SPAN:
            raise BadRequestError("Período longo demais: no máximo 10 anos por consulta.")
        res = choose_resolution(end_utc - start_utc, resolution)
        limit = settings.readings_max_points
        params: dict[str, str | int] = {"device": device, "start": int(start_utc.timestamp() * 1e9),
                                        "end": int(end_utc.timestamp() * 1e9)}
        where = "device = $device AND time >= $start AND time < $end"
        if not caller.sees_all:
            # Only what came in under the meter's own site: readings another site's gateway published under
            # this meter's id are not this tenant's.
            where += " AND site = $site"
            params["site"] = site
        q = f"SELECT * FROM {table(settings.influx_db, _RP[res])} WHERE {where} ORDER BY time ASC LIMIT {limit + 1}"
        rows = await influx.rows(q, db=settings.influx_db, params=params)
        if len(rows) > limit:
            raise BadRequestError(f"Mais de {limit} pontos na resolução '{res}': reduza o período ou use uma "
                                  "resolução maior (1m ou 1h).")
        for row in rows:
            for tag in ("site", "gateway", "device"):
                row.pop(tag, None)
        return ReadingsOut(device=device, resolution=res, start=start_utc, end=end_utc, count=len(rows),
                           points=rows)
