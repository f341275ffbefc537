"""``/api/v1/analytics/...``: consumption, cost, Tarifa Branca, forecast, reports and alerts.

:class:`AnalyticsService` holds the orchestration (query InfluxDB, apply the pure modules) so it can be used
without HTTP (bench, tests); the controller is a thin pt-BR layer on top. :func:`analytics_lifespan` builds it
with the ANEEL pulls and the alert engine when the app starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar import Controller, Litestar, Request, Response, get
from litestar.params import FromQuery
from litestar.static_files import create_static_files_router

from backend.alerts import AlertEngine, AlertList
from backend.aneel_sites import SiteConfig, SiteConfigError, load_sites
from backend.aneel_store import AneelData, AneelScheduler, AneelStore, aneel_client
from backend.billing import Bill, estimate_bill, explain, quick_cost, unit_prices
from backend.consumption import (
    GRANULARITIES,
    HOUR_MS,
    PEAK_MAX_SPAN_MS,
    TZ,
    Consumption,
    Granularity,
    choose_resolution,
    consumption,
    fetch_peak,
    fetch_samples,
    gap_for,
    min_dt_for,
    series_consumption,
)
from backend.errors import BadRequestError, NotFoundError, UnavailableError
from backend.forecast import Forecast, forecast_daily
from backend.reports import Report, ReportKind, build_report, to_csv
from backend.rollups import energy_from_ms
from backend.settings import Settings
from backend.tarifa_branca import POSTOS, split_by_posto
from backend.tariffs import TariffError

log = logging.getLogger(__name__)
_DEVICE_RE = re.compile(r"^[0-9a-f]{16}$")
DAY_MS = 86_400_000


def local_range(inicio: str | None, fim: str | None, *, default_days: int = 7) -> tuple[dt.date, dt.date, int, int]:
    """Local dates (``fim`` inclusive) -> (start, end, start_ms, end_ms) on America/Sao_Paulo midnights."""
    try:
        today = dt.datetime.now(TZ).date()
        end = dt.date.fromisoformat(fim) if fim else today
        start = dt.date.fromisoformat(inicio) if inicio else end - dt.timedelta(days=default_days - 1)
    except ValueError as exc:
        raise BadRequestError("Datas devem estar no formato AAAA-MM-DD.") from exc
    if end < start:
        raise BadRequestError("'fim' é anterior a 'inicio'.")
    if (end - start).days > 400:
        raise BadRequestError("Período máximo: 400 dias.")

    def ms(d: dt.date) -> int:
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp() * 1000)

    return start, end, ms(start), ms(end + dt.timedelta(days=1))


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
    """Convencional − Branca: positive means Tarifa Branca would be cheaper."""
    recommendation: str
    hours: list[dict[str, Any]]
    """Per local hour: kWh per posto and the cost difference it causes (Branca − Convencional), biggest first."""


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
    influx: Any
    sites: dict[str, SiteConfig]
    data: AneelData
    store: AneelStore
    scheduler: AneelScheduler | None = None
    alerts: AlertEngine | None = None

    # --- scope and consumption ------------------------------------------------------------------------------

    def scope(self, site: str | None, device: str | None, grupo: str | None) -> Scope:
        if device:
            if not _DEVICE_RE.fullmatch(device):
                raise BadRequestError("'device' deve ter 16 dígitos hexadecimais.")
            owner = next((s for s in self.sites.values() if device in s.devices), None)
            if site and site in self.sites:
                owner = self.sites[site]
            return Scope(label=device, site=owner, site_id=None, devices=[device])
        if not site:
            raise BadRequestError("Informe 'site' ou 'device'.")
        cfg = self.sites.get(site)
        if grupo:
            if cfg is None or grupo not in cfg.groups:
                raise NotFoundError(f"Grupo '{grupo}' não configurado no site '{site}'.")
            return Scope(label=f"{site}/{grupo}", site=cfg, site_id=None, devices=list(cfg.groups[grupo]))
        if not re.fullmatch(r"^[a-z0-9][a-z0-9_-]{0,62}$", site):
            raise BadRequestError("'site' inválido.")
        return Scope(label=site, site=cfg, site_id=site, devices=[])

    async def consumo(self, scope: Scope, start_ms: int, end_ms: int, granularity: Granularity,
                      *, with_peak: bool = True, series: bool = True) -> Consumption:
        """Consumption of a site, group or device. Beyond the raw range the energy series answer (one series per
        site, or the devices' 15-min/daily series summed inside InfluxDB) once complete from the range's start;
        otherwise, or with ``series=False``, the per-meter rollups."""
        res = choose_resolution(start_ms, end_ms, granularity)
        if (series and res != "raw" and (scope.site_id or scope.devices)
                and await self._site_series_cover(start_ms)):
            return await series_consumption(self.influx, self.settings.influx_db, start_ms, end_ms, granularity,
                                            site=scope.site_id, devices=scope.devices, with_peak=with_peak)
        per_day = res == "r1h" and granularity in ("day", "week", "month")
        samples = await fetch_samples(self.influx, self.settings.influx_db, start_ms, end_ms, res,
                                      site=scope.site_id, devices=scope.devices, per_day=per_day)
        max_w = self.settings.analytics_max_power_w
        c = consumption(samples.values(), start_ms, end_ms, granularity,
                        gap_ms=2 * DAY_MS + HOUR_MS if per_day else gap_for(res), max_power_w=max_w,
                        min_dt_ms=HOUR_MS if per_day else min_dt_for(res), with_peak=with_peak and res == "raw")
        if with_peak and res != "raw" and end_ms - start_ms <= PEAK_MAX_SPAN_MS:
            kw, at = await fetch_peak(self.influx, self.settings.influx_db, start_ms, end_ms, site=scope.site_id,
                                      devices=scope.devices, max_power_w=max_w)
            c = msgspec.structs.replace(c, peak_kw=kw, peak_at=at)
        return c

    async def _site_series_cover(self, start_ms: int) -> bool:
        """Whether the energy series are complete from ``start_ms`` (their backfill may still be running)."""
        since = await energy_from_ms(self.influx, self.settings)
        return since is not None and since <= start_ms - DAY_MS

    def _site(self, scope: Scope) -> SiteConfig:
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
        site = self._site(scope)
        await self._books()
        hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
        split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), self._windows(site))
        try:
            bill = estimate_bill(site, start, end, split.kwh, self.data.tariffs, self.data.flags, modality=modality)
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc
        notes = []
        if hourly.kwh_total == 0:
            notes.append("nenhuma medição de energia no período: conta sem consumo")
        elif hourly.gaps:
            notes.append(f"{len(hourly.gaps)} lacuna(s) de dados no período: energia distribuída pelo intervalo")
        return msgspec.structs.replace(bill, warnings=bill.warnings + notes) if notes else bill

    def _windows(self, site: SiteConfig) -> Any:
        try:
            cnpj = self.data.tariffs.resolve_cnpj(site.distributor)
        except TariffError:
            cnpj = ""
        try:
            return site.windows(cnpj)
        except KeyError as exc:
            raise BadRequestError(str(exc.args[0])) from exc

    async def tarifa_branca(self, scope: Scope, start: dt.date, end: dt.date, start_ms: int,
                            end_ms: int) -> TarifaBrancaOut:
        site = self._site(scope)
        await self._books()
        hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
        split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), self._windows(site))
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
        saving = conv.total - branca.total
        rec = ("A Tarifa Branca seria mais barata neste período." if saving > 0 else
               "A Tarifa Convencional continua mais vantajosa neste período.")
        return TarifaBrancaOut(site=site.id, start=start, end=end, kwh={k: round(v, 3) for k, v in split.kwh.items()},
                               convencional=conv, branca=branca, saving_rs=saving, recommendation=rec, hours=hours)

    # --- forecast and reports -------------------------------------------------------------------------------

    async def previsao(self, scope: Scope, history_days: int = 56) -> ForecastOut:
        today = dt.datetime.now(TZ).date()
        last_day = today - dt.timedelta(days=1)
        _, _, start_ms, end_ms = local_range((today - dt.timedelta(days=history_days)).isoformat(),
                                             last_day.isoformat())
        daily = await self.consumo(scope, start_ms, end_ms, "day", with_peak=False)
        history = [b.kwh for b in daily.buckets]
        while history and history[0] == 0.0:  # before the meter existed
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
                                           self._windows(site))
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
        hourly = await self.consumo(scope, start_ms, end_ms, "hour", with_peak=False)
        peaks = []
        if end_ms - start_ms <= 40 * DAY_MS:
            peaks = (await self.consumo(scope, start_ms, end_ms, "15min", with_peak=False)).buckets
        site = scope.site
        price_fn = flag_fn = windows = None
        if site is not None:
            with contextlib.suppress(UnavailableError):
                await self._books()
                windows = self._windows(site)
                books = self.data

                def price_fn(day: dt.date, kwh: dict[str, float]) -> Decimal | None:
                    try:
                        return quick_cost(kwh, unit_prices(site, day, books.tariffs, books.flags))
                    except TariffError:
                        return None

                def flag_fn(day: dt.date) -> str | None:
                    try:
                        return books.flags.flag_for(day).flag
                    except TariffError:
                        return None

        return build_report(scope.label, kind, hourly.buckets, start_ms, end_ms, windows=windows, price=price_fn,
                            flag_of=flag_fn, peaks=peaks)


# --- app wiring ---------------------------------------------------------------------------------------------


def _service(request: Request[Any, Any, Any]) -> AnalyticsService:
    svc = request.app.state.services.extra.get("analytics")
    if svc is None:
        raise UnavailableError("Serviço de análise não iniciado.")
    return svc  # type: ignore[no-any-return]


@asynccontextmanager
async def analytics_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Sites, ANEEL data/pulls and alerts for the app's lifetime (registered in backend.app.LIFESPANS)."""
    services = app.state.services
    s: Settings = services.settings
    try:
        sites = load_sites(Path(s.sites_file)) if s.sites_file else {}
    except SiteConfigError as exc:
        log.error("sites file invalid; analytics run without sites", extra={"error": str(exc)})
        sites = {}
    store = AneelStore(services.influx, s.influx_db)
    with contextlib.suppress(Exception):
        await store.ensure_schema()
    data = AneelData(store)
    svc = AnalyticsService(settings=s, influx=services.influx, sites=sites, data=data, store=store)
    async with aneel_client(s) as client:
        svc.scheduler = AneelScheduler(s, store, data, list(sites.values()), client)
        if s.aneel_sync_enabled:
            svc.scheduler.start()
        publish = None
        ingest = getattr(services, "ingest", None)
        if ingest is not None:
            async def publish(topic: str, payload: bytes) -> None:
                await ingest.bridge.publish(topic, payload, qos=1, retain=True)
        svc.alerts = AlertEngine(s, services.influx, sites, publish)
        if s.alerts_enabled and sites:
            svc.alerts.start()
        services.extra["analytics"] = svc
        try:
            yield
        finally:
            services.extra.pop("analytics", None)
            await svc.scheduler.stop()
            await svc.alerts.stop()


Formato = Literal["json", "csv"]


class AnalyticsController(Controller):
    path = "/api/v1/analytics"
    tags = ["análises"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/sites")
    async def sites(self, request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
        """Sites configurados (distribuidora, modalidade, dispositivos e grupos)."""
        svc = _service(request)
        return [{"id": s.id, "nome": s.name or s.id, "distribuidora": s.distributor, "subgrupo": s.subgroup,
                 "modalidade": s.modality, "dispositivos": s.devices, "grupos": s.groups,
                 "dia_leitura": s.billing_day} for s in svc.sites.values()]

    @get("/consumo")
    async def consumo(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
        grupo: FromQuery[str | None] = None,
        inicio: FromQuery[str | None] = None,
        fim: FromQuery[str | None] = None,
        granularidade: FromQuery[str] = "hour",
    ) -> Consumption:
        """kWh por hora/dia/semana/mês (horário de Brasília), a partir dos registradores de energia; demanda
        máxima em janelas de 15 min."""
        if granularidade not in GRANULARITIES:
            raise BadRequestError(f"'granularidade' deve ser uma de {', '.join(GRANULARITIES)}.")
        svc = _service(request)
        _, _, a, b = local_range(inicio, fim)
        if granularidade == "15min" and b - a > 40 * DAY_MS:
            raise BadRequestError("Granularidade de 15 min limitada a 40 dias.")
        return await svc.consumo(svc.scope(site, device, grupo), a, b, granularidade)  # type: ignore[arg-type]

    @get("/custo")
    async def custo(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: FromQuery[str | None] = None,
        fim: FromQuery[str | None] = None,
        referencia: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Conta estimada do ciclo de faturamento (ou do período dado), linha a linha, com a REH usada."""
        svc = _service(request)
        scope = svc.scope(site, None, None)
        cfg = svc._site(scope)
        if not inicio and not fim:
            try:
                ref = dt.date.fromisoformat(referencia) if referencia else dt.datetime.now(TZ).date()
            except ValueError as exc:
                raise BadRequestError("'referencia' deve estar no formato AAAA-MM-DD.") from exc
            s0, e0 = cfg.cycle_for(ref)
            inicio, fim = s0.isoformat(), e0.isoformat()
        start, end, a, b = local_range(inicio, fim)
        bill = await svc.custo(scope, start, end, a, b)
        return {"conta": bill, "explicacao": explain(bill), "status_aneel": await _status(svc)}

    @get("/tarifa-branca")
    async def tarifa_branca(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: FromQuery[str | None] = None,
        fim: FromQuery[str | None] = None,
    ) -> TarifaBrancaOut:
        """A mesma energia faturada na Convencional e na Branca (ponta/intermediário/fora ponta em dias úteis)."""
        svc = _service(request)
        start, end, a, b = local_range(inicio, fim, default_days=30)
        return await svc.tarifa_branca(svc.scope(site, None, None), start, end, a, b)

    @get("/previsao")
    async def previsao(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
    ) -> ForecastOut:
        """Próximos 7 dias e restante do mês (kWh e R$), com intervalo e o erro do backtest contra o
        sazonal ingênuo."""
        svc = _service(request)
        return await svc.previsao(svc.scope(site, device, None))

    @get("/relatorios")
    async def relatorios(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
        grupo: FromQuery[str | None] = None,
        tipo: FromQuery[str] = "diario",
        inicio: FromQuery[str | None] = None,
        fim: FromQuery[str | None] = None,
        formato: FromQuery[str] = "json",
    ) -> Response[Any]:
        """Resumo diário, semanal ou mensal em JSON ou CSV (números no formato brasileiro)."""
        if tipo not in ("diario", "semanal", "mensal"):
            raise BadRequestError("'tipo' deve ser diario, semanal ou mensal.")
        if formato not in ("json", "csv"):
            raise BadRequestError("'formato' deve ser json ou csv.")
        svc = _service(request)
        _, _, a, b = local_range(inicio, fim, default_days=30)
        rep = await svc.relatorio(svc.scope(site, device, grupo), tipo, a, b)  # type: ignore[arg-type]
        if formato == "csv":
            name = f"relatorio-{rep.scope.replace('/', '-')}-{tipo}.csv"
            return Response(to_csv(rep), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return Response(rep)

    @get("/alertas")
    async def alertas(self, request: Request[Any, Any, Any], site: FromQuery[str | None] = None) -> list[AlertList]:
        """Alertas atuais: medidor sem comunicação, consumo anormal, tensão fora da faixa adequada (PRODIST
        Módulo 8), fator de potência abaixo de 0,92."""
        svc = _service(request)
        engine = svc.alerts
        if engine is None:
            raise UnavailableError("Alertas desativados.")
        wanted = [svc.sites[site]] if site and site in svc.sites else list(svc.sites.values())
        if site and site not in svc.sites:
            raise NotFoundError(f"Site '{site}' não configurado.")
        out = []
        for s in wanted:
            current = engine.current.get(s.id)
            if current is None or time.time() - _age(current) > svc.settings.alerts_interval_s * 2:
                current = await engine.evaluate_site(s)
            out.append(current)
        return out


dashboard_router = create_static_files_router(
    path="/painel", directories=[Path(__file__).resolve().parent.parent / "dashboard"], html_mode=True,
    opt={"public": True}, name="painel", include_in_schema=False)
"""The pt-BR dashboard (static HTML/JS/CSS; it asks for a login and then calls the API with the token)."""


def _age(a: AlertList) -> float:
    return dt.datetime.fromisoformat(a.evaluated_at).timestamp()


async def _status(svc: AnalyticsService) -> dict[str, Any]:
    from backend.errors import InfluxError

    try:
        st = await svc.store.status()
        return msgspec.to_builtins(st)  # type: ignore[no-any-return]
    except InfluxError:
        return {"erro": "status indisponível", "dados_em_memoria": bool(svc.data.tariffs.records)}
