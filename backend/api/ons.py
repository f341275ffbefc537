"""``/api/v1/ons/...``: the national grid from ONS's open data — balance, the latest hour, CMO — with the data's age,
and a manual pull (admin).

A thin pt-BR layer over :class:`backend.ons.grid.GridData`: check the query parameters, pick a default period
around the newest data held (ONS publishes with a lag of a day or two), call the queries, shape the answer.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, get, post

from backend.api.access import audited
from backend.api.auth import requires_role
from backend.api.openapi import choice, local_day
from backend.api.state import services_of
from backend.errors import BadRequestError, UnavailableError
from backend.ons.balance import GRANULARITIES, BalanceBucket, Granularity, totals
from backend.ons.datasets import SIN, SUBSYSTEM_NAMES, SUBSYSTEMS
from backend.ons.grid import MAX_DAYS, CmoSeries, DataAge, GridData, NoGridData, NowOut
from backend.ons.runtime import OnsService
from backend.ons.sync import SyncReport
from protocol.timebase import TZ

DEFAULT_DAYS: Final[dict[str, int]] = {"hora": 7, "dia": 31, "mes": 365, "cmo": 7}
_START = local_day("Primeiro dia (AAAA-MM-DD, horário de Brasília, anos 2000 a 2100).")
_END = local_day("Último dia, inclusive (AAAA-MM-DD); padrão: o dia do dado mais recente.")


class BalanceOut(msgspec.Struct):
    subsistema: str
    nome: str
    granularidade: str
    inicio: dt.date
    fim: dt.date
    unidade: str
    buckets: list[BalanceBucket]
    totais: dict[str, float | None]
    idade_dos_dados: DataAge


class CmoOut(msgspec.Struct):
    inicio: dt.date
    fim: dt.date
    unidade: str
    series: list[CmoSeries]
    idade_dos_dados: DataAge


def _ons(request: Request[Any, Any, Any]) -> OnsService:
    ons = services_of(request).ons
    if ons is None:
        raise UnavailableError("Dados do ONS indisponíveis: serviço não iniciado.")
    return ons


def _subsystem(value: str, *, allow_sin: bool = True) -> str:
    code = value.strip().upper()
    allowed = (*SUBSYSTEMS, SIN) if allow_sin else SUBSYSTEMS
    if code not in allowed:
        raise BadRequestError(f"'subsistema' deve ser um de {', '.join(allowed)}.")
    return code


def _date(value: str, name: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise BadRequestError(f"'{name}' deve estar no formato AAAA-MM-DD.") from exc
    if not 2000 <= day.year <= 2100:
        raise BadRequestError(f"'{name}' deve estar entre 2000 e 2100 (o ONS publica dados desde 2000).")
    return day


async def _period(grid: GridData, inicio: str | None, fim: str | None, kind: str) -> tuple[dt.date, dt.date, int, int]:
    """Local dates (``fim`` inclusive) and their UTC ms bounds; without dates, the period ends on the day of the
    newest data held."""
    span = dt.timedelta(days=DEFAULT_DAYS[kind] - 1)
    if fim:
        end = _date(fim, "fim")
    elif inicio:
        end = _date(inicio, "inicio") + span
    else:
        latest = await grid.latest_hours()
        end = dt.datetime.fromtimestamp(max(latest.values()) / 1000, TZ).date() if latest else \
            dt.datetime.now(TZ).date()
    start = _date(inicio, "inicio") if inicio else end - span
    if end < start:
        raise BadRequestError("'fim' é anterior a 'inicio'.")
    if (end - start).days + 1 > MAX_DAYS[kind]:
        raise BadRequestError(f"Período máximo para esta consulta: {MAX_DAYS[kind]} dias.")

    def ms(d: dt.date) -> int:
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp() * 1000)

    return start, end, ms(start), ms(end + dt.timedelta(days=1))


class OnsController(Controller):
    path = "/api/v1/ons"
    tags = ["ONS"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/balanco")
    async def balanco(self, request: Request[Any, Any, Any],
                      subsistema: Annotated[str, choice((*SUBSYSTEMS, SIN), "Subsistema, ou o SIN inteiro.")] = SIN,
                      inicio: Annotated[str | None, _START] = None, fim: Annotated[str | None, _END] = None,
                      granularidade: Annotated[str, choice(GRANULARITIES, "Hora, dia ou mês.")] = "hora",
                      ) -> BalanceOut:
        """Balanço de energia de um subsistema (SE, S, NE, N) ou do SIN (a soma dos quatro): geração por fonte,
        carga e intercâmbio em MWh por hora, dia ou mês (horário de Brasília), com a participação renovável.

        Padrão: os últimos 7 dias (por hora) dos dados publicados; no máximo 93 dias por hora, 800 por dia, 3 700
        por mês.
        """
        if granularidade not in GRANULARITIES:
            raise BadRequestError(f"'granularidade' deve ser uma de {', '.join(GRANULARITIES)}.")
        gran: Granularity = granularidade
        code = _subsystem(subsistema)
        grid = _ons(request).grid
        start, end, a, b = await _period(grid, inicio, fim, gran)
        items = await grid.balance(code, a, b, gran)
        return BalanceOut(subsistema=code, nome=SUBSYSTEM_NAMES[code], granularidade=gran, inicio=start, fim=end,
                          unidade="MWh", buckets=items, totais=totals(items), idade_dos_dados=await grid.age())

    @get("/agora")
    async def agora(self, request: Request[Any, Any, Any]) -> NowOut:
        """A hora mais recente de cada subsistema e do SIN: geração por fonte, carga, intercâmbio e participação
        renovável (MWmed), e a idade dos dados (o ONS publica com um ou dois dias de atraso)."""
        try:
            return await _ons(request).grid.now()
        except NoGridData as exc:
            raise UnavailableError("Dados do ONS ainda não sincronizados; tente após a primeira sincronização.") \
                from exc

    @get("/cmo")
    async def cmo(self, request: Request[Any, Any, Any],
                  subsistema: Annotated[str | None, choice(SUBSYSTEMS, "Subsistema; padrão: os quatro.")] = None,
                  inicio: Annotated[str | None, _START] = None, fim: Annotated[str | None, _END] = None) -> CmoOut:
        """Custo marginal de operação semi-horário (R$/MWh) por subsistema; sem 'subsistema', os quatro.

        Padrão: os últimos 7 dias dos dados publicados; no máximo 93 dias. Não há CMO do SIN.
        """
        if subsistema and subsistema.strip().upper() == SIN:
            raise BadRequestError("O CMO é publicado por subsistema (SE, S, NE, N), não para o SIN.")
        codes = [_subsystem(subsistema, allow_sin=False)] if subsistema else list(SUBSYSTEMS)
        grid = _ons(request).grid
        start, end, a, b = await _period(grid, inicio, fim, "cmo")
        return CmoOut(inicio=start, fim=end, unidade="R$/MWh", series=await grid.cmo(codes, a, b),
                      idade_dos_dados=await grid.age())

    @post("/sync", guards=[requires_role("admin")], status_code=200)
    async def sync(self, request: Request[Any, Any, Any]) -> SyncReport:
        """Puxa agora os arquivos do ONS que mudaram e informa o que foi lido (somente admin)."""
        async with audited(request, "sincronizar_ons"):
            return await _ons(request).scheduler.run_once()
