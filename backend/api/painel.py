"""``/api/v1/painel/...``: what the dashboard's "at a glance" strip needs, in two calls it can poll.

The other endpoints answer one question each (consumption of a range, the bill of a cycle, a forecast); the top of
the dashboard needs a handful of small answers at once, every few seconds, and some of them need a rule the other
endpoints leave to the reader:

* ``/agora`` (cheap, polled every few seconds): the newest power of every meter of the caller's sites, summed per
  site, and how many meters and gateways are online with when each was last seen. A meter whose newest reading is
  older than :data:`LIVE_MAX_AGE_MS` has no "power now" (``None``, shown as a gap), never a stale number.
* ``/postos``: the posto tarifário of every hour of a range, so the hourly chart can colour its bars by the price
  the Tarifa Branca would put on them (weekends and national holidays fora ponta).
* ``/resumo`` (polled every minute): today's and the billing cycle's kWh and R$ so far, the same stretch of the day
  before and of the previous cycle, and the projected bill of the cycle with its interval. The rules that keep
  these honest are here: "so far" is the energy lines of the bill of those days (the figure ``custo`` and the
  reports print for them) and never includes the custo de disponibilidade (a minimum charge is not what the user
  spent on the cycle's first day); the projection uses the weighted weekly
  profile only when its backtest beats the seasonal-naive baseline (positive skill) and otherwise the baseline,
  saying which; comparisons use whole days only, and a day without data is ``None``, not 0.

The arithmetic reuses the analytics service (consumption, bills, unit prices, the forecasters) unchanged. Its kWh
come from the site's hourly series (``raw=False``): one read of ~24 rows a day for yesterday, today and the cycle,
which keeps the call under 100 ms whatever the number of meters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import statistics
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from backend.analytics.billing import energy_cost, estimate_bill, unit_prices
from backend.analytics.forecast import MIN_HISTORY_DAYS, Z80, backtest, seasonal_naive, weekly_profile
from backend.analytics.reports import has_data
from backend.analytics.service import AnalyticsService, local_range
from backend.aneel.postos import POSTOS, SLICE_MINUTES, posto_at, split_by_posto
from backend.aneel.sites import SiteConfig
from backend.aneel.tariffs import TariffError
from backend.api.access import sees_device, visible_analytics
from backend.api.auth import caller_of
from backend.api.names import meter_names
from backend.api.openapi import local_day
from backend.api.state import Services, book_of
from backend.errors import BadRequestError, NotFoundError, UnavailableError
from backend.ingest.fleet import DeviceOut, device_statuses, gateway_statuses, recent_readings
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import RP_RAW, table
from backend.store.registers import Bucket
from protocol.timebase import DAY_MS, HOUR_MS, TZ

LIVE_MAX_AGE_MS: Final = 60_000
"""A reading older than this is not "power now" (the demo meters report every second, real ones every few)."""
HISTORY_DAYS: Final = 70
"""Daily history read for the forecast (56 days) plus the previous cycle's same stretch (cycles are ≤ 33 days)."""
MAE_TO_SD: Final = math.sqrt(math.pi / 2)
"""σ ≈ MAE·√(π/2) for normal errors: the baseline's interval from its backtest MAE (it has no residuals of its own)."""


class MeterNow(msgspec.Struct):
    device: str
    nome: str
    """The name an operator gave it (``Geladeira``), else the group it is alone in (``cozinha``), else its short
    id."""
    nome_dado: str | None
    """The name an operator gave it, None when none (for the form that edits it)."""
    gateway: str
    online: bool
    visto_em_ms: int | None
    potencia_w: float | None
    """Signed active power of the newest reading (negative: injecting into the grid), None when none came in the
    last minute."""
    medido_em_ms: int | None
    com_injecao: bool = False
    """The newest reading carries a non-zero exported-energy register: a meter of a site that generates."""


class SiteNow(msgspec.Struct):
    site: str
    nome: str
    potencia_w: float | None
    """Sum over the site's meters with a recent reading; None when none has one. Negative: the site injects
    into the grid more than it takes."""
    medidores_sem_leitura: int
    medidores: list[MeterNow]
    com_geracao: bool = False
    """One of its meters has ever exported energy (its register is above zero): show import vs export."""


class GatewayNow(msgspec.Struct):
    site: str
    gateway: str
    online: bool
    visto_em_ms: int | None
    fila: int


class NowOut(msgspec.Struct):
    agora_ms: int
    sites: list[SiteNow]
    gateways: list[GatewayNow]
    medidores_online: int
    medidores_total: int
    gateways_online: int
    gateways_total: int


class Stretch(msgspec.Struct):
    """Energy and its cost over a stretch of time, beside the same stretch before."""

    inicio: str
    kwh: float
    rs: Decimal | None
    """kWh × the site's price with taxes and bandeira (no minimum charge); None without tariffs."""
    kwh_anterior: float | None
    """The same stretch of the day (or cycle) before, over whole days for a cycle; None unless all of it has data."""
    variacao_pct: float | None


class Projection(msgspec.Struct):
    kwh: float
    kwh_min: float
    kwh_max: float
    rs: Decimal
    rs_min: Decimal
    rs_max: Decimal
    metodo: str
    usa_linha_de_base: bool
    """True when the weekly profile did not beat the seasonal-naive baseline, so the baseline projects."""
    skill: float | None
    inclui_custo_disponibilidade: bool
    intervalo: str = "80 %"


class SummaryOut(msgspec.Struct):
    site: str
    hoje: Stretch
    ciclo_inicio: str
    ciclo_fim: str
    ciclo_dias: int
    ciclo_dias_decorridos: int
    ciclo: Stretch
    projecao: Projection | None
    nota_projecao: str
    injecao_hoje_kwh: float | None = None
    """Energy injected into the grid today (exported register), as ``consumo`` reports it for a site with
    generation; None when no meter of the site exported today nor reports an export register above zero now (a
    meter whose first readings with the register just came in: 0, not None)."""


class HourPosto(msgspec.Struct):
    inicio_ms: int
    posto: str
    """The posto of most of the hour's 15-minute slices (a tie goes to the dearer posto)."""


def _friendly(cfg: SiteConfig | None, device: str, given: str | None) -> str:
    if given:
        return given
    if cfg is not None:
        alone = [g for g, members in cfg.groups.items() if members == [device]]
        if alone:
            return alone[0]
    return f"Medidor …{device[-4:]}"


class PainelController(Controller):
    path = "/api/v1/painel"
    tags = ["painel"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/agora")
    async def agora(self, request: Request[Any, Any, Any], influx: NamedDependency[InfluxClient],
                    settings: NamedDependency[Settings], services: NamedDependency[Services],
                    site: FromQuery[str | None] = None) -> NowOut:
        """Potência agora (W) por site e por medidor, e medidores e gateways online com a última comunicação.

        Um medidor sem leitura no último minuto fica sem potência (null), nunca com um valor antigo."""
        svc = await visible_analytics(request)
        if site is not None:
            svc.scope(site, None, None)  # 404 for a hidden or unknown site, as everywhere
        caller = await caller_of(request)
        # One read of the newest raw reading of every meter gives both its status (last seen) and its power now;
        # the names come from memory (or their own read), side by side.
        now_ms = services.clock()
        recent, names = await asyncio.gather(recent_readings(influx, settings, now_ms),
                                             meter_names(request).names())
        statuses = await device_statuses(influx, settings, services.registry, book_of(services), recent=recent,
                                         now_ms=now_ms)
        devices = [d for d in statuses
                   if sees_device(caller, services, d.device, d.site) and (site is None or d.site == site)]
        gateways = [g for g in gateway_statuses(services.registry, devices)
                    if caller.can_see(g.site) and (site is None or g.site == site)]
        rows = [r for r in recent.values() if int(r["time"]) > now_ms - LIVE_MAX_AGE_MS]
        live = {r["device"]: (float(r["p"]), int(r["time"])) for r in rows if r.get("p") is not None}
        exporting = {r["device"] for r in rows if r.get("e")}
        by_site: dict[str, list[MeterNow]] = {}
        known = {d.device for d in devices}
        for conf in svc.sites.values():  # a configured meter never heard of is shown, offline
            if site is None or conf.id == site:
                devices += [DeviceOut(device=x, site=conf.id, gateway="", online=False, last_seen_ms=None)
                            for x in conf.devices if x not in known]
        for d in sorted(devices, key=lambda d: d.device):
            cfg = svc.sites.get(d.site)
            p, at = live.get(d.device, (None, None))
            given = names.get((d.site, d.device))
            by_site.setdefault(d.site, []).append(MeterNow(
                device=d.device, nome=_friendly(cfg, d.device, given), nome_dado=given, gateway=d.gateway,
                online=d.online, visto_em_ms=d.last_seen_ms, potencia_w=round(p, 1) if p is not None else None,
                medido_em_ms=at, com_injecao=d.device in exporting))
        sites = []
        for sid, meters in sorted(by_site.items()):
            powers = [m.potencia_w for m in meters if m.potencia_w is not None]
            cfg = svc.sites.get(sid)
            sites.append(SiteNow(site=sid, nome=(cfg.name if cfg and cfg.name else sid),
                                 potencia_w=round(sum(powers), 1) if powers else None,
                                 medidores_sem_leitura=len(meters) - len(powers), medidores=meters,
                                 com_geracao=any(m.com_injecao for m in meters)))
        return NowOut(agora_ms=now_ms, sites=sites,
                      gateways=[GatewayNow(site=g.site, gateway=g.gateway, online=g.online,
                                           visto_em_ms=g.status_ts or None, fila=g.queued) for g in gateways],
                      medidores_online=sum(d.online for d in devices), medidores_total=len(devices),
                      gateways_online=sum(g.online for g in gateways), gateways_total=len(gateways))

    @get("/postos")
    async def postos(self, request: Request[Any, Any, Any], site: FromQuery[str],
                     inicio: Annotated[str | None, local_day("Primeiro dia (AAAA-MM-DD).")] = None,
                     fim: Annotated[str | None, local_day("Último dia, inclusive (AAAA-MM-DD).")] = None,
                     ) -> list[HourPosto]:
        """Posto tarifário (ponta, intermediário, fora ponta) de cada hora do período, pelas janelas da
        distribuidora do site; no máximo 93 dias."""
        svc = await visible_analytics(request)
        cfg = svc.site_of(svc.scope(site, None, None))
        _, _, a, b = local_range(inicio, fim)
        if b - a > 93 * DAY_MS:
            raise BadRequestError("Postos tarifários hora a hora: escolha até 93 dias.")
        await svc.data.load()  # a distributor given by CNPJ is resolved with ANEEL's data
        windows = svc.posto_windows(cfg)
        out = []
        for start in range(a, b, HOUR_MS):
            slices = [posto_at(dt.datetime.fromtimestamp((start + i * SLICE_MINUTES * 60_000) / 1000, TZ), windows)
                      for i in range(HOUR_MS // (SLICE_MINUTES * 60_000))]
            out.append(HourPosto(inicio_ms=start, posto=max(POSTOS, key=lambda p: (slices.count(p), -POSTOS.index(p)))))
        return out

    @get("/resumo")
    async def resumo(self, request: Request[Any, Any, Any], services: NamedDependency[Services],
                     site: FromQuery[str]) -> SummaryOut:
        """Hoje e ciclo de faturamento até agora (kWh e R$, comparados ao mesmo trecho anterior) e a conta
        projetada do ciclo com seu intervalo.

        "Até agora" é energia × preço com tributos, sem o custo de disponibilidade; a projeção usa o perfil semanal
        só quando ele vence o sazonal ingênuo no backtest, senão o próprio sazonal ingênuo."""
        svc = await visible_analytics(request)
        scope = svc.scope(site, None, None)
        cfg = svc.site_of(scope)
        now_ms = services.clock()
        now = dt.datetime.fromtimestamp(now_ms / 1000, TZ)
        today = now.date()
        c0, c1 = cfg.cycle_for(today)
        hist_start = min(today - dt.timedelta(days=HISTORY_DAYS), c0)
        _, _, a, b = local_range(hist_start.isoformat(), today.isoformat())
        _, _, y0, h1 = local_range((today - dt.timedelta(days=1)).isoformat(), today.isoformat())
        _, _, ca, _ = local_range(c0.isoformat(), today.isoformat())
        midnight_ms = h1 - DAY_MS
        # A site without generation gets no injection from consumo(): its export register is read apart (a meter
        # may export before its site is configured with generation).
        plain = cfg.gd is None and not cfg.generation
        # The reads are independent: side by side, so the call costs the slowest of them rather than their sum.
        # One hourly read covers yesterday, today and the cycle so far, from the site's series rather than the raw
        # readings: the same kWh the consumption chart shows, and 24 rows a day instead of 86 400 per meter.
        daily, hourly, export, exporting, prices = await asyncio.gather(
            svc.consumo(scope, a, b, "day", with_peak=False),
            svc.consumo(scope, min(ca, y0), b, "hour", with_peak=False, raw=False),
            svc.exported(scope, midnight_ms, h1, "hour") if plain else _nothing(),
            _exporting_now(svc, cfg.id, now_ms) if plain else _nothing(),
            _prices(svc, cfg, today))
        # A day without data is absent (None below), never 0 kWh.
        by_day = {dt.datetime.fromtimestamp(x.start_ms / 1000, TZ).date(): x.kwh for x in daily.buckets
                  if has_data([x])}
        cycle_buckets = [x for x in hourly.buckets if x.start_ms >= ca]
        windows = svc.posto_windows(cfg)  # the service's own posto windows of this site (its overrides included)

        def cost(first: dt.date, buckets: list[Any]) -> Decimal | None:
            """The energy lines of the bill of [first, today]: the figure the report and ``custo`` print."""
            if prices is None:
                return None
            split = split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in buckets), windows)
            try:
                return energy_cost(estimate_bill(cfg, first, today, split.kwh, svc.data.tariffs, svc.data.flags))
            except TariffError:
                return None

        today_b = [x for x in hourly.buckets if x.start_ms >= midnight_ms]
        elapsed_ms = now_ms - midnight_ms
        yest_kwh = stretch_kwh(hourly.buckets, midnight_ms - DAY_MS, elapsed_ms)
        today_kwh = sum(x.kwh for x in today_b)
        hoje = Stretch(inicio=today.isoformat(), kwh=round(today_kwh, 3), rs=cost(today, today_b),
                       kwh_anterior=round(yest_kwh, 3) if yest_kwh is not None else None,
                       variacao_pct=_change(today_kwh, yest_kwh))

        whole = (today - c0).days  # whole days of the cycle before today
        prev0 = cfg.cycle_for(c0 - dt.timedelta(days=1))[0]
        cur_whole = [by_day.get(c0 + dt.timedelta(days=i)) for i in range(whole)]
        prev_whole = [by_day.get(prev0 + dt.timedelta(days=i)) for i in range(whole)]
        comparable = whole > 0 and None not in prev_whole and any(prev_whole)
        cycle_kwh = sum(x.kwh for x in cycle_buckets)
        cur_sum = sum(v or 0.0 for v in cur_whole)
        prev_sum = sum(v or 0.0 for v in prev_whole) if comparable else None
        ciclo = Stretch(inicio=c0.isoformat(), kwh=round(cycle_kwh, 3), rs=cost(c0, cycle_buckets),
                        kwh_anterior=round(prev_sum, 3) if prev_sum is not None else None,
                        variacao_pct=_change(cur_sum, prev_sum) if whole > 0 else None)

        history = [by_day.get(today - dt.timedelta(days=i)) for i in range(56, 0, -1)]
        while history and history[0] is None:  # before the meters existed
            history.pop(0)
        projection, note = None, ""
        if len(history) < MIN_HISTORY_DAYS:
            note = f"Histórico curto ({len(history)} dias; são precisos {MIN_HISTORY_DAYS}): sem projeção ainda."
        elif prices is None:
            note = "Tarifas da ANEEL ainda não sincronizadas: sem projeção em R$."
        else:
            projection = await _project(svc, cfg, history, today, today_kwh, c0, c1, cycle_buckets, windows)
        if export is None:
            injected: float | None = round(sum(x.injecao_kwh or 0.0 for x in today_b), 3)
        else:
            # A meter that exports now has injected a number today, 0 until its register moves: the step from its
            # older readings, stored without the register (absent, or 0 from an old gateway), to the register's
            # first value is not energy of today, so a meter whose first readings with it just came in counts 0.
            injected = round(export.kwh_total, 3) if export.kwh_total > 0 or exporting else None
        return SummaryOut(site=cfg.id, hoje=hoje, ciclo_inicio=c0.isoformat(), ciclo_fim=c1.isoformat(),
                          ciclo_dias=(c1 - c0).days + 1, ciclo_dias_decorridos=whole + 1, ciclo=ciclo,
                          projecao=projection, nota_projecao=note, injecao_hoje_kwh=injected)


async def _nothing() -> None:
    return None


async def _exporting_now(svc: AnalyticsService, site: str, now_ms: int) -> bool:
    """Whether a meter of ``site`` reported an export register above zero in the minute before ``now_ms``: what
    ``/agora`` calls a site with generation (``com_geracao``), so the two calls agree on whether the site injects."""
    db = svc.settings.influx_db
    rows = await svc.influx.rows(f"SELECT max(energy_export_mwh) AS e FROM {table(db, RP_RAW)} "
                                 f"WHERE site = $site AND time > {now_ms - LIVE_MAX_AGE_MS}ms", db=db,
                                 params={"site": site})
    return any(r.get("e") for r in rows)


async def _prices(svc: AnalyticsService, cfg: SiteConfig, day: dt.date) -> dict[str, Decimal] | None:
    with contextlib.suppress(TariffError, UnavailableError, KeyError):
        await svc.data.load()
        if svc.data.tariffs.records:
            return unit_prices(cfg, day, svc.data.tariffs, svc.data.flags)
    return None


def _overlap(offset_ms: int, length_ms: int, until_ms: int) -> float:
    """Share of a bucket starting ``offset_ms`` after midnight that lies before ``until_ms`` after midnight."""
    return min(max((until_ms - offset_ms) / length_ms, 0.0), 1.0)


def stretch_kwh(hours: list[Bucket], start_ms: int, length_ms: int) -> float | None:
    """kWh of [start, start + length) from hourly buckets — yesterday until the time it is now — or None unless
    every hour of it has readings. A day covered in part (a meter installed in the afternoon, rollups still
    catching up on a fresh install) is no comparison: its 0.0 kWh morning made "hoje" +21 641 %."""
    inside = [x for x in hours if start_ms <= x.start_ms < start_ms + length_ms]
    if len(inside) < -(-length_ms // HOUR_MS) or not all(_has_readings(x) for x in inside):
        return None
    return sum(x.kwh * _overlap(x.start_ms - start_ms, x.end_ms - x.start_ms, length_ms) for x in inside)


def _has_readings(hour: Bucket) -> bool:
    # An hour in which a solar home drew nothing but injected has readings too.
    return has_data([hour]) or bool(hour.injecao_kwh)


def _change(now: float, before: float | None) -> float | None:
    return round(100 * (now - before) / before, 1) if before else None


async def _project(svc: AnalyticsService, cfg: SiteConfig, history: list[float | None], today: dt.date,
                   today_kwh: float, c0: dt.date, c1: dt.date, cycle_buckets: list[Any], windows: Any) -> Projection:
    """The cycle's bill for the energy so far plus the forecast of the rest (today's remainder included), printed
    by the same :func:`estimate_bill` as ``/custo``; the interval from the chosen forecaster's backtest error."""
    rest_days = (c1 - today).days  # whole days after today
    bt = backtest(history)
    horizon = rest_days + 1
    if bt is not None and bt.skill > 0:
        values, sd, method = weekly_profile(history, horizon), bt.residual_sd_kwh, bt.method
    else:
        values = seasonal_naive(history, horizon)
        known = [v for v in history if v is not None]
        sd = bt.mae_baseline_kwh * MAE_TO_SD if bt else (statistics.pstdev(known) if len(known) > 1 else 0.0)
        method = "sazonal ingênuo (mesmo dia da semana anterior)"
    use_baseline = bt is None or bt.skill <= 0
    rest = max(values[0] - today_kwh, 0.0) + sum(values[1:])
    half = Z80 * sd * math.sqrt(horizon)
    so_far = sum(x.kwh for x in cycle_buckets)
    split = split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in cycle_buckets), windows).kwh
    share = {p: v / so_far for p, v in split.items()} if so_far > 0 else {}

    def bill(extra: float) -> Any:
        total = so_far + max(extra, 0.0)
        kwh = {p: total * s for p, s in share.items()} if share else {"Fora ponta": total}
        try:
            return estimate_bill(cfg, c0, c1, kwh, svc.data.tariffs, svc.data.flags)
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc

    mid, low, high = bill(rest), bill(rest - half), bill(rest + half)
    return Projection(kwh=round(so_far + rest, 3), kwh_min=round(so_far + max(rest - half, 0.0), 3),
                      kwh_max=round(so_far + rest + half, 3), rs=mid.total, rs_min=low.total, rs_max=high.total,
                      metodo=method, usa_linha_de_base=use_baseline, skill=bt.skill if bt else None,
                      inclui_custo_disponibilidade=any(line.kind == "disponibilidade" for line in mid.lines))
