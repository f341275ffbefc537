"""The analytics service: consumption, cost, Tarifa Branca, forecast and reports for a site, group or device.

:class:`AnalyticsService` holds the orchestration (query InfluxDB, apply the pure modules) so it is used without
HTTP by the bench and the tests; ``backend/api/analytics.py`` is a thin pt-BR layer on top, and
:func:`backend.analytics.runtime.open_analytics` builds it with the ANEEL pulls and the alert engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from backend.analytics.alerts import AlertEngine
from backend.analytics.billing import Bill, energy_cost, estimate_bill, quick_cost, unit_prices
from backend.analytics.credits import CreditLot, add_months, ledger
from backend.analytics.forecast import Forecast, forecast_daily
from backend.analytics.generation import combine, without
from backend.analytics.ledger import LedgerMonth, LedgerStore
from backend.analytics.queries import (
    PEAK_MAX_SPAN_MS,
    Register,
    fetch_gap_edges,
    fetch_peak,
    fetch_samples,
    series_consumption,
)
from backend.analytics.reports import Report, ReportKind, build_report, has_data
from backend.analytics.scee import SceeBill, scee_bill
from backend.aneel.postos import POSTOS, PostoWindows, split_by_posto
from backend.aneel.sites import AVAILABILITY_KWH, SiteConfig
from backend.aneel.store import AneelData, AneelStore
from backend.aneel.sync import AneelScheduler
from backend.aneel.tariffs import TariffError
from backend.errors import BadRequestError, DateOutOfRangeError, NotFoundError, UnavailableError
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.registers import (
    Consumption,
    Granularity,
    choose_resolution,
    consumption,
    gap_for,
    min_dt_for,
)
from backend.store.rollups import SeriesStart
from protocol.ids import is_device_id, is_ident
from protocol.timebase import DAY_MS, FIRST_DATE, HOUR_MS, LAST_DATE, TZ


def local_range(inicio: str | None, fim: str | None, *, default_days: int = 7) -> tuple[dt.date, dt.date, int, int]:
    """Local dates (``fim`` inclusive) -> (start, end, start_ms, end_ms) on America/Sao_Paulo midnights."""
    try:
        end = dt.date.fromisoformat(fim) if fim else dt.datetime.now(TZ).date()
        given = dt.date.fromisoformat(inicio) if inicio else None
    except ValueError as exc:
        raise BadRequestError("Datas devem estar no formato AAAA-MM-DD.") from exc
    # Checked before any arithmetic: a year-1 or year-9999 date would overflow it, and InfluxDB stops at 2262.
    if not all(FIRST_DATE <= d <= LAST_DATE for d in (end, given) if d is not None):
        raise DateOutOfRangeError
    start = given or end - dt.timedelta(days=default_days - 1)
    if end < start:
        raise BadRequestError("'fim' é anterior a 'inicio'.")
    if (end - start).days > 400:
        raise BadRequestError("Período máximo: 400 dias.")

    def ms(d: dt.date) -> int:
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp() * 1000)

    return start, end, ms(start), ms(end + dt.timedelta(days=1))


def _energy_notes(hourly: Consumption) -> list[str]:
    """The warnings a bill carries about the energy it priced: none measured, or some spread over a data gap
    (which moves kWh between postos: docs/analytics.md, the one gap rule)."""
    if hourly.kwh_total == 0:
        return ["nenhuma medição de energia no período: conta sem consumo"]
    if hourly.gaps:
        return [f"{len(hourly.gaps)} lacuna(s) de dados no período: energia distribuída pelo intervalo"]
    return []


def _with_notes(bill: Bill, notes: list[str]) -> Bill:
    return msgspec.structs.replace(bill, warnings=bill.warnings + notes) if notes else bill


class Scope(msgspec.Struct, frozen=True):
    label: str
    site: SiteConfig | None
    site_id: str | None
    devices: list[str]


class TarifaBrancaOut(msgspec.Struct):
    site: str
    start: dt.date
    end: dt.date
    kwh: dict[str, float]
    convencional: Bill
    branca: Bill
    saving_rs: Decimal
    """Convencional − Branca: positive means Tarifa Branca would be cheaper (for a GD site: of the SCEE bills)."""
    recommendation: str
    hours: list[dict[str, Any]]
    """Per local hour: kWh per posto and the cost difference it causes (Branca − Convencional), biggest first."""
    scee_convencional: SceeBill | None = None
    """GD sites: the SCEE bill (compensation, credits) under each modality; ``convencional``/``branca`` above
    then price the consumption as if nothing were compensated."""
    scee_branca: SceeBill | None = None


class ForecastOut(msgspec.Struct):
    scope: str
    history_days: int
    forecast: Forecast
    month_to_date_kwh: float
    price_rs_kwh: Decimal | None
    next_7_days_cost_rs: list[Decimal] | None
    """[estimate, low, high] in R$."""
    rest_of_month_cost_rs: list[Decimal] | None


@dataclass
class AnalyticsService:
    settings: Settings
    influx: InfluxClient
    sites: dict[str, SiteConfig]
    data: AneelData
    store: AneelStore
    scheduler: AneelScheduler | None = None
    alerts: AlertEngine | None = None
    visible: frozenset[str] | None = None
    """The sites the caller may see (None: every site); see :meth:`restricted`."""
    device_site: Callable[[str], str | None] | None = None
    """The site a meter belongs to (None when unknown), for a restricted view."""
    series_start: SeriesStart = dataclasses.field(default_factory=SeriesStart)
    """Where the energy series begin, read at most every few seconds (shared with the restricted views)."""

    def restricted(self, visible: frozenset[str], device_site: Callable[[str], str | None]) -> AnalyticsService:
        """This service as a caller with site grants sees it: only the ``visible`` sites are configured, and a
        scope naming any other site, or a meter of one, is a 404 worded as for one that does not exist
        (backend/api/access.py has the rule). Cheap: the clients, books and engines are shared."""
        return dataclasses.replace(self, sites={k: v for k, v in self.sites.items() if k in visible},
                                   visible=visible, device_site=device_site)

    def _check_visible(self, site: str | None, device: str | None) -> None:
        if self.visible is None:
            return
        if site and site not in self.visible:
            raise NotFoundError(f"Site '{site[:64]}' não encontrado.")
        if device and (self.device_site is None or self.device_site(device) not in self.visible):
            raise NotFoundError(f"Medidor {device} desconhecido.")

    # --- scope and consumption ------------------------------------------------------------------------------

    def scope(self, site: str | None, device: str | None, grupo: str | None) -> Scope:
        if device:
            if not is_device_id(device):
                raise BadRequestError("'device' deve ter 16 dígitos hexadecimais.")
            self._check_visible(site, device)
            owner = next((s for s in self.sites.values() if device in s.devices), None)
            if site and site in self.sites:
                owner = self.sites[site]
            return Scope(label=device, site=owner, site_id=None, devices=[device])
        if not site:
            raise BadRequestError("Informe 'site' ou 'device'.")
        self._check_visible(site, None)
        cfg = self.sites.get(site)
        if grupo:
            if cfg is None or grupo not in cfg.groups:
                raise NotFoundError(f"Grupo '{grupo}' não configurado no site '{site}'.")
            return Scope(label=f"{site}/{grupo}", site=cfg, site_id=None, devices=list(cfg.groups[grupo]))
        if not is_ident(site):
            raise BadRequestError("'site' inválido.")
        return Scope(label=site, site=cfg, site_id=site, devices=[])

    async def consumo(self, scope: Scope, start_ms: int, end_ms: int, granularity: Granularity,
                      *, with_peak: bool = True, series: bool = True, raw: bool = True) -> Consumption:
        """Consumption of a site, group or device. Beyond the raw range the energy series answer (one series per
        site, or the devices' 15-min/daily series summed inside InfluxDB) once complete from the range's start;
        otherwise, or with ``series=False``, the per-meter rollups.

        ``raw=False`` reads the series even for a short range once they cover it (hour buckets and coarser, which
        the series carry exactly): a day of one-second readings is 86 400 rows per meter, while the site's hourly
        series is 24 rows kept up to the minute by the rollup worker — what a summary polled every minute can
        afford. Without the series (rollups off, backfill running) the raw readings still answer.

        A site with generation (``[site.gd]`` or generation meters) also gets injection and net energy per bucket,
        and with generation meters the generation and self-consumption share (backend/analytics/generation.py);
        its generation meters are left out of its consumption and injection."""
        site = scope.site
        if site is None or (site.gd is None and not site.generation):
            return await self._register(scope.site_id, scope.devices, start_ms, end_ms, granularity, "import",
                                        with_peak=with_peak, series=series, raw=raw)
        whole_site = scope.site_id is not None
        gen_devs = [d for d in site.generation if whole_site or d in scope.devices]
        devices = [d for d in scope.devices if d not in gen_devs]
        if scope.devices and not devices:  # a generation meter asked on its own: its own registers
            gen_devs, devices = [], scope.devices

        async def energy(register: Register, peak: bool) -> tuple[Consumption, Consumption | None]:
            if not gen_devs:
                return await self._register(scope.site_id, devices, start_ms, end_ms, granularity, register,
                                            with_peak=peak, series=series, raw=raw), None
            got, gen = await asyncio.gather(
                self._register(scope.site_id, devices, start_ms, end_ms, granularity, register, with_peak=peak,
                               series=series, raw=raw),
                self._register(None, gen_devs, start_ms, end_ms, granularity, register, with_peak=False,
                               series=series, raw=raw))
            return (without(got, gen) if whole_site else got), gen

        # The two registers (and the generation meters') are independent reads: run them side by side.
        (cons, generated), (exported, gen_export) = await asyncio.gather(energy("import", with_peak),
                                                                         energy("export", False))
        if gen_export is not None:  # what a generation meter exported (its standby draw at night) is not injection
            exported = without(exported, gen_export) if whole_site else exported
        return combine(cons, exported, generated)

    async def _register(self, site_id: str | None, devices: list[str], start_ms: int, end_ms: int,
                        granularity: Granularity, register: Register, *, with_peak: bool,
                        series: bool, raw: bool = True) -> Consumption:
        """One register's energy for a site or a device list, from the series, the rollups or the raw readings."""
        res = choose_resolution(start_ms, end_ms, granularity)
        db = self.settings.influx_db
        if res == "raw" and not raw and granularity != "15min" and await self._site_series_cover(start_ms):
            res = "r1h"
        if series and res != "raw" and (site_id or devices) and await self._site_series_cover(start_ms):
            return await series_consumption(self.influx, db, start_ms, end_ms, granularity, site=site_id,
                                            devices=devices, with_peak=with_peak, register=register)
        per_day = res == "r1h" and granularity in ("day", "week", "month")
        samples = await fetch_samples(self.influx, db, start_ms, end_ms, res, site=site_id, devices=devices,
                                      per_day=per_day, register=register)
        known: set[tuple[int, int]] = set()
        # Each gap's edges to the minute, as the other paths place them (the one gap rule); over 40 days the scan of
        # the 1-minute rollups would cost more than the whole query, and the hours next to a gap stay approximate.
        if res == "r1h" and end_ms - start_ms <= PEAK_MAX_SPAN_MS:
            edges = await fetch_gap_edges(self.influx, db, start_ms, end_ms, site=site_id, devices=devices,
                                          gap_ms=gap_for("r1m"), register=register)
            for dev, (extra, gaps) in edges.items():
                # The hourly samples inside a gap (an hour's end, the next hour's start) only repeat its edges.
                kept = [x for x in samples.get(dev, []) if not any(a < x.ts_ms < b for a, b in gaps)]
                samples[dev] = kept + extra
                known.update(gaps)
        max_w = self.settings.analytics_max_power_w
        c = consumption(samples.values(), start_ms, end_ms, granularity,
                        gap_ms=2 * DAY_MS + HOUR_MS if per_day else gap_for(res), max_power_w=max_w,
                        min_dt_ms=HOUR_MS if per_day else min_dt_for(res), with_peak=with_peak and res == "raw",
                        known_gaps=known)
        if with_peak and res != "raw" and end_ms - start_ms <= PEAK_MAX_SPAN_MS:
            kw, at = await fetch_peak(self.influx, db, start_ms, end_ms, site=site_id, devices=devices,
                                      max_power_w=max_w)
            c = msgspec.structs.replace(c, peak_kw=kw, peak_at=at)
        return c

    async def exported(self, scope: Scope, start_ms: int, end_ms: int, granularity: Granularity) -> Consumption:
        """The export register's energy of a scope's meters whether or not its site declares generation (a solar
        meter exports before anyone writes ``[site.gd]``), from the series when they cover the range."""
        return await self._register(scope.site_id, scope.devices, start_ms, end_ms, granularity, "export",
                                    with_peak=False, series=True, raw=False)

    async def _site_series_cover(self, start_ms: int) -> bool:
        """Whether the energy series are complete from ``start_ms`` (their backfill may still be running)."""
        since = await self.series_start.read(self.influx, self.settings)
        return since is not None and since <= start_ms - DAY_MS

    def site_of(self, scope: Scope) -> SiteConfig:
        if scope.site is None:
            raise NotFoundError(f"'{scope.label}' não tem configuração de tarifa (BACKEND_SITES_FILE).")
        return scope.site

    async def _books(self) -> None:
        await self.data.load()
        if not self.data.tariffs.records:
            raise UnavailableError("Tarifas da ANEEL ainda não sincronizadas; tente após a primeira sincronização.")

    # --- cost -------------------------------------------------------------------------------------------------

    async def custo(self, scope: Scope, start: dt.date, end: dt.date, start_ms: int, end_ms: int,
                    modality: str | None = None) -> Bill:
        site = self.site_of(scope)
        await self._books()
        hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
        split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), self.posto_windows(site))
        try:
            bill = estimate_bill(site, start, end, split.kwh, self.data.tariffs, self.data.flags, modality=modality)
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc
        return _with_notes(bill, _energy_notes(hourly))

    def posto_windows(self, site: SiteConfig) -> PostoWindows:
        """The site's posto tarifário windows as every price here uses them: its distributor's, with the site's own
        overrides; the dashboard and the budget alerts split energy with these so they agree with ``custo``."""
        try:
            cnpj = self.data.tariffs.resolve_cnpj(site.distributor)
        except TariffError:
            cnpj = ""
        try:
            return site.windows(cnpj)
        except KeyError as exc:
            raise BadRequestError(str(exc.args[0])) from exc

    # --- SCEE (distributed generation) -----------------------------------------------------------------------

    def ledger_store(self) -> LedgerStore:
        return LedgerStore(self.influx, self.settings.influx_db)

    async def _energy_by_posto(self, scope: Scope, site: SiteConfig, start_ms: int,
                               end_ms: int) -> tuple[dict[str, float], dict[str, float], list[str]]:
        """Consumption (import register) and injection (export register) per posto of a GD site's cycle.

        Both registers go through the same reset/spike/gap rules and the same path, so the two sides of the netting
        come from the same samples: the energy series once they cover the cycle (so a cycle older than the raw
        retention prices its injection too), else the raw readings."""
        windows = self.posto_windows(site)
        if await self._site_series_cover(start_ms):
            hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
            export = [(b.start_ms, b.end_ms, b.injecao_kwh or 0.0) for b in hourly.buckets]
            gaps = bool(hourly.gaps)
        else:
            cons, exp = await asyncio.gather(self._raw_hourly(scope, site, start_ms, end_ms, "import"),
                                             self._raw_hourly(scope, site, start_ms, end_ms, "export"))
            hourly, gaps = cons, bool(cons.gaps or exp.gaps)
            export = [(b.start_ms, b.end_ms, b.kwh) for b in exp.buckets]
        consumed = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), windows)
        injected = split_by_posto(export, windows)
        notes = ["lacunas de dados no ciclo: energia distribuída pelo intervalo"] if gaps else []
        return consumed.kwh, injected.kwh, notes

    async def _raw_hourly(self, scope: Scope, site: SiteConfig, start_ms: int, end_ms: int,
                          register: Register) -> Consumption:
        """One register's hourly energy from the raw readings, the site's generation meters left out."""
        db, max_w = self.settings.influx_db, self.settings.analytics_max_power_w
        samples = await fetch_samples(self.influx, db, start_ms, end_ms, "raw", site=scope.site_id,
                                      devices=scope.devices, register=register)
        return consumption((v for k, v in samples.items() if k not in site.generation), start_ms, end_ms, "hour",
                           gap_ms=gap_for("raw"), max_power_w=max_w, min_dt_ms=min_dt_for("raw"), with_peak=False)

    async def custo_scee(self, scope: Scope, start: dt.date, end: dt.date, start_ms: int, end_ms: int,
                         modality: str | None = None) -> SceeBill:
        """The SCEE bill of a GD site's cycle, with the credits carried in from the stored ledger."""
        site = self.site_of(scope)
        await self._books()
        (cons, inj, notes), opening = await asyncio.gather(
            self._energy_by_posto(scope, site, start_ms, end_ms),
            self.ledger_store().balance_before(site.id, end.replace(day=1)))
        if opening is None:
            notes.append("sem histórico de créditos armazenado: saldo anterior considerado zero "
                         "(reconstrua em /api/v1/analytics/creditos?reconstruir=true)")
        try:
            bill = scee_bill(site, start, end, cons, inj, opening or [], self.data.tariffs, self.data.flags,
                             self.data.fio_b, modality=modality)
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc
        return msgspec.structs.replace(bill, warnings=bill.warnings + notes) if notes else bill

    async def creditos(self, scope: Scope, first: dt.date, last: dt.date, *, rebuild: bool = False
                       ) -> list[LedgerMonth]:
        """The credits ledger of a GD site from month ``first`` to ``last``; ``rebuild`` recomputes those cycles
        from the measured consumption and injection, starting from the balance stored before ``first``, and
        overwrites them (idempotent: the same data give the same points)."""
        site = self.site_of(scope)
        if site.gd is None:
            raise BadRequestError(f"O site '{site.id}' não tem geração distribuída configurada ([site.gd]).")
        store = self.ledger_store()
        first, last = first.replace(day=1), last.replace(day=1)
        if rebuild:
            months: list[tuple[dt.date, dict[str, Decimal], dict[str, Decimal]]] = []
            m = first
            while m <= last:
                c0, c1 = site.cycle_for(m.replace(day=max(site.billing_day, 1)))
                _, _, a, b = local_range(c0.isoformat(), c1.isoformat())
                cons, inj, _ = await self._energy_by_posto(scope, site, a, b)
                if site.modality != "Branca":  # Convencional nets the whole month, whatever the hour
                    cons, inj = {"Não se aplica": sum(cons.values())}, {"Não se aplica": sum(inj.values())}
                months.append((m, {k: Decimal(str(round(v, 3))) for k, v in cons.items()},
                               {k: Decimal(str(round(v, 3))) for k, v in inj.items()}))
                m = add_months(m, 1)
            opening: list[CreditLot] = await store.balance_before(site.id, first) or []
            await store.ensure_schema()
            await store.write(site.id, ledger(months, regime=site.gd.regime,
                                              availability_kwh=AVAILABILITY_KWH.get(site.phases, 0),
                                              opening=opening))
        return await store.months(site.id, first, last)

    async def tarifa_branca(self, scope: Scope, start: dt.date, end: dt.date, start_ms: int,
                            end_ms: int) -> TarifaBrancaOut:
        site = self.site_of(scope)
        await self._books()
        hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
        split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), self.posto_windows(site))
        try:
            conv = estimate_bill(site, start, end, split.kwh, self.data.tariffs, self.data.flags,
                                 modality="Convencional")
            branca = estimate_bill(site, start, end, split.kwh, self.data.tariffs, self.data.flags,
                                   modality="Branca")
            prices_c = unit_prices(site, end, self.data.tariffs, self.data.flags, modality="Convencional")
            prices_b = unit_prices(site, end, self.data.tariffs, self.data.flags, modality="Branca")
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc
        hours: list[dict[str, Any]] = []
        for hour, per in sorted(split.by_hour.items()):
            kwh = sum(per.values())
            diff = sum((Decimal(str(round(per[p], 6))) * prices_b[p] for p in POSTOS), Decimal(0)) - \
                Decimal(str(round(kwh, 6))) * prices_c["Não se aplica"]
            hours.append({"hora": hour, "kwh": round(kwh, 3), "kwh_por_posto": {p: round(per[p], 3) for p in POSTOS},
                          "diferenca_rs": diff.quantize(Decimal("0.01"))})
        hours.sort(key=lambda h: -abs(float(h["diferenca_rs"])))
        notes = _energy_notes(hourly)  # the same warnings as ``custo``, on both bills
        conv, branca = _with_notes(conv, notes), _with_notes(branca, notes)
        saving = conv.total - branca.total
        scee_c = scee_b = None
        if site.gd is not None:  # what the unit really pays: the SCEE bills under each modality
            scee_c, scee_b = await asyncio.gather(
                self.custo_scee(scope, start, end, start_ms, end_ms, modality="Convencional"),
                self.custo_scee(scope, start, end, start_ms, end_ms, modality="Branca"))
            saving = scee_c.total - scee_b.total
        rec = ("A Tarifa Branca seria mais barata neste período." if saving > 0 else
               "A Tarifa Convencional continua mais vantajosa neste período.")
        return TarifaBrancaOut(site=site.id, start=start, end=end, kwh={k: round(v, 3) for k, v in split.kwh.items()},
                               convencional=conv, branca=branca, saving_rs=saving, recommendation=rec, hours=hours,
                               scee_convencional=scee_c, scee_branca=scee_b)

    # --- forecast and reports -------------------------------------------------------------------------------

    async def previsao(self, scope: Scope, history_days: int = 56) -> ForecastOut:
        today = dt.datetime.now(TZ).date()
        last_day = today - dt.timedelta(days=1)
        _, _, start_ms, end_ms = local_range((today - dt.timedelta(days=history_days)).isoformat(),
                                             last_day.isoformat())
        daily = await self.consumo(scope, start_ms, end_ms, "day", with_peak=False)
        history: list[float | None] = [b.kwh if has_data([b]) else None for b in daily.buckets]
        while history and history[0] is None:  # before the meter existed
            history.pop(0)
        fc = forecast_daily(history, last_day)
        mtd = sum(b.kwh for b in daily.buckets
                  if dt.datetime.fromtimestamp(b.start_ms / 1000, TZ).date().replace(day=1) == today.replace(day=1))
        price = None
        c7 = crest = None
        if scope.site is not None:
            with contextlib.suppress(TariffError, UnavailableError, KeyError):
                await self._books()
                site = scope.site
                if site.modality == "Convencional":
                    price = unit_prices(site, today, self.data.tariffs, self.data.flags)["Não se aplica"]
                else:  # Branca: the average price of the last 28 days' posto mix
                    _, _, a, b = local_range((today - dt.timedelta(days=28)).isoformat(), last_day.isoformat())
                    hourly = await self.consumo(scope, a, b, "hour", with_peak=False)
                    split = split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in hourly.buckets),
                                           self.posto_windows(site))
                    total = sum(split.kwh.values())
                    if total > 0:
                        cost = quick_cost(split.kwh, unit_prices(site, today, self.data.tariffs, self.data.flags))
                        price = cost / Decimal(str(round(total, 6)))
        if price is not None:
            q = Decimal("0.01")
            c7 = [(Decimal(str(v)) * price).quantize(q) for v in (fc.next_7_days.kwh, fc.next_7_days.low,
                                                                  fc.next_7_days.high)]
            crest = [(Decimal(str(v)) * price).quantize(q) for v in (fc.rest_of_month.kwh, fc.rest_of_month.low,
                                                                     fc.rest_of_month.high)]
        return ForecastOut(scope=scope.label, history_days=len(history), forecast=fc,
                           month_to_date_kwh=round(mtd, 3),
                           price_rs_kwh=price.quantize(Decimal("0.000001")) if price is not None else None,
                           next_7_days_cost_rs=c7, rest_of_month_cost_rs=crest)

    async def relatorio(self, scope: Scope, kind: ReportKind, start_ms: int, end_ms: int) -> Report:
        """Rows that add up to the period's bill: the total is what ``custo`` and ``tarifa-branca`` print for the
        same energy and days (its energy lines, without the availability charge), shared out over the rows."""
        if end_ms - start_ms <= 40 * DAY_MS:  # the hours and the 15-min peaks are independent reads
            hourly, quarters = await asyncio.gather(self.consumo(scope, start_ms, end_ms, "hour", with_peak=False),
                                                    self.consumo(scope, start_ms, end_ms, "15min", with_peak=False))
            peaks = quarters.buckets
        else:
            hourly, peaks = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False), []
        site = scope.site
        price_fn = flag_fn = windows = None
        total: Decimal | None = None
        if site is not None:
            with contextlib.suppress(UnavailableError):
                await self._books()
                windows = self.posto_windows(site)
                books = self.data
                first = dt.datetime.fromtimestamp(start_ms / 1000, TZ).date()
                last = dt.datetime.fromtimestamp((end_ms - 1) / 1000, TZ).date()
                split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), windows)
                with contextlib.suppress(TariffError):
                    total = energy_cost(estimate_bill(site, first, last, split.kwh, books.tariffs, books.flags))

                def price_fn(day: dt.date, kwh: dict[str, float]) -> Decimal | None:
                    try:
                        prices = unit_prices(site, day, books.tariffs, books.flags)
                    except TariffError:
                        return None
                    if "Não se aplica" in prices:
                        return Decimal(str(sum(kwh.values()))) * prices["Não se aplica"]
                    return sum((Decimal(str(kwh.get(p, 0.0))) * v for p, v in prices.items()), Decimal(0))

                def flag_fn(day: dt.date) -> str | None:
                    try:
                        return books.flags.flag_for(day).flag
                    except TariffError:
                        return None

        return build_report(scope.label, kind, hourly.buckets, start_ms, end_ms, windows=windows,
                            price=price_fn if total is not None else None, total_cost=total, flag_of=flag_fn,
                            peaks=peaks)
