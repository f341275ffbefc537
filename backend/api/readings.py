"""Readings of one meter over a period, raw or from the 1-minute / 1-hour rollups; a meter of a site the caller
may not see is a 404 (backend/api/access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

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
        start: Annotated[datetime | None, QueryParameter(
            description="Início, ISO 8601 (sem fuso = UTC); padrão: uma hora antes de 'end'.")] = None,
        end: Annotated[datetime | None, QueryParameter(description="Fim (exclusivo), ISO 8601; padrão: agora.")] = None,
        resolution: Annotated[Resolution, QueryParameter(
            description="raw, 1m, 1h ou auto (bruto até 6 h, 1m até 7 dias, 1h além).")] = "auto",
    ) -> ReadingsOut:
        """Medições de um medidor no período [start, end), brutas ou dos rollups de 1 minuto ou 1 hora.

        Os pontos vêm em ordem de tempo. 400 para um período vazio ou longo demais e para mais pontos que o limite
        (use uma resolução maior); 422 para uma data fora do intervalo que o CDS guarda.
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
