"""``/api/v1/analytics/...``: consumption, cost, Tarifa Branca, forecast, reports and alerts.

A thin pt-BR layer over :class:`backend.analytics.service.AnalyticsService`: parse and check the query
parameters, call the service as the caller sees it (only their sites: backend/api/access.py), shape the answer
(JSON, or CSV for reports).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromQuery

from backend.analytics.alerts import AlertList
from backend.analytics.billing import explain
from backend.analytics.ledger import LedgerMonth
from backend.analytics.renewable import RenewableOut, site_renewable, site_subsystem_of
from backend.analytics.reports import Report, to_csv
from backend.analytics.scee import explain_scee
from backend.analytics.service import AnalyticsService, ForecastOut, TarifaBrancaOut, local_range
from backend.api.access import visible_analytics
from backend.api.openapi import also_as, choice, errors, local_day
from backend.api.state import services_of
from backend.errors import BadRequestError, InfluxError, NotFoundError, UnavailableError
from backend.ons.datasets import SUBSYSTEM_NAMES
from backend.store.registers import GRANULARITIES, Consumption
from protocol.timebase import DAY_MS, TZ


class SiteOut(msgspec.Struct):
    id: str
    nome: str
    distribuidora: str
    subgrupo: str
    modalidade: str
    dispositivos: list[str]
    grupos: dict[str, list[str]]
    dia_leitura: int
    subsistema: str | None
    """SE, S, NE or N; None when neither the sites file nor the distributor tells (set ``subsystem`` then)."""
    nome_subsistema: str | None
    origem_subsistema: str | None
    """``site`` (the sites file's ``subsystem``) or ``distribuidora`` (derived from the distributor)."""


REPORT_KINDS: Final = ("diario", "semanal", "mensal")
REPORT_FORMATS: Final = ("json", "csv")
_START = local_day("Primeiro dia do período (AAAA-MM-DD, horário de Brasília).")
_END = local_day("Último dia do período, inclusive (AAAA-MM-DD); padrão: hoje.")


class AnalyticsController(Controller):
    path = "/api/v1/analytics"
    tags = ["análises"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/sites")
    async def sites(self, request: Request[Any, Any, Any]) -> list[SiteOut]:
        """Sites configurados (distribuidora, modalidade, dispositivos, grupos) e o subsistema do SIN de cada um
        (do arquivo de sites ou derivado da distribuidora)."""
        svc = await visible_analytics(request)
        await svc.data.load()  # a distributor given by CNPJ is looked up in ANEEL's data for its sigla
        out = []
        for s in svc.sites.values():
            code, origin = site_subsystem_of(svc, s)
            out.append(SiteOut(id=s.id, nome=s.name or s.id, distribuidora=s.distributor, subgrupo=s.subgroup,
                               modalidade=s.modality, dispositivos=s.devices, grupos=s.groups,
                               dia_leitura=s.billing_day, subsistema=code,
                               nome_subsistema=SUBSYSTEM_NAMES[code] if code else None,
                               origem_subsistema=origin if code else None))
        return out

    @get("/consumo", responses=errors(422))
    async def consumo(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
        grupo: FromQuery[str | None] = None,
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
        granularidade: Annotated[str, choice(GRANULARITIES, "Intervalo de cada valor (15min até 40 dias).")] = "hour",
    ) -> Consumption:
        """Consumo em kWh por 15 min, hora, dia, semana ou mês (horário de Brasília), com a demanda máxima.

        Calculado a partir dos registradores de energia; a demanda máxima em janelas de 15 min. Padrão: os últimos
        7 dias.
        """
        if granularidade not in GRANULARITIES:
            raise BadRequestError(f"'granularidade' deve ser uma de {', '.join(GRANULARITIES)}.")
        svc = await visible_analytics(request)
        _, _, a, b = local_range(inicio, fim)
        if granularidade == "15min" and b - a > 40 * DAY_MS:
            raise BadRequestError("Granularidade de 15 min limitada a 40 dias.")
        return await svc.consumo(svc.scope(site, device, grupo), a, b, granularidade)  # type: ignore[arg-type]

    @get("/custo", responses=errors(422))
    async def custo(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
        referencia: Annotated[str | None, local_day(
            "Sem 'inicio' e 'fim': um dia do ciclo de faturamento desejado (AAAA-MM-DD); padrão: hoje.")] = None,
    ) -> dict[str, Any]:
        """Conta estimada do ciclo de faturamento (ou do período dado), linha a linha, com a REH usada."""
        svc = await visible_analytics(request)
        scope = svc.scope(site, None, None)
        cfg = svc.site_of(scope)
        if not inicio and not fim:
            try:
                ref = dt.date.fromisoformat(referencia) if referencia else dt.datetime.now(TZ).date()
            except ValueError as exc:
                raise BadRequestError("'referencia' deve estar no formato AAAA-MM-DD.") from exc
            s0, e0 = cfg.cycle_for(ref)
            inicio, fim = s0.isoformat(), e0.isoformat()
        start, end, a, b = local_range(inicio, fim)
        if cfg.gd is not None:  # micro/minigeração: the SCEE bill, with the credit balance carried on
            scee = await svc.custo_scee(scope, start, end, a, b)
            return {"conta": scee, "explicacao": explain_scee(scee), "sistema": "SCEE",
                    "saldo_creditos_kwh": scee.credits.balance_total, "status_aneel": await _status(svc)}
        bill = await svc.custo(scope, start, end, a, b)
        return {"conta": bill, "explicacao": explain(bill), "status_aneel": await _status(svc)}

    @get("/tarifa-branca", responses=errors(422))
    async def tarifa_branca(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
    ) -> TarifaBrancaOut:
        """A mesma energia faturada na Convencional e na Branca (ponta/intermediário/fora ponta em dias úteis).

        Padrão: os últimos 30 dias.
        """
        svc = await visible_analytics(request)
        start, end, a, b = local_range(inicio, fim, default_days=30)
        return await svc.tarifa_branca(svc.scope(site, None, None), start, end, a, b)

    @get("/creditos", responses=errors(422))
    async def creditos(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
        reconstruir: Annotated[bool, FromQuery, msgspec.Meta(
            description="Recalcula os ciclos do período a partir da energia medida (idempotente).")] = False,
    ) -> list[LedgerMonth]:
        """Créditos de energia do SCEE por ciclo: injetado, compensado, gerado, usado, expirado e saldo por mês
        de origem (validade de 60 meses). Padrão: os últimos 12 meses."""
        svc = await visible_analytics(request)
        start, end, _, _ = local_range(inicio, fim, default_days=365)
        return await svc.creditos(svc.scope(site, None, None), start, end, rebuild=reconstruir)

    @get("/previsao")
    async def previsao(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
    ) -> ForecastOut:
        """Próximos 7 dias e restante do mês (kWh e R$), com intervalo e o erro do backtest contra o
        sazonal ingênuo."""
        svc = await visible_analytics(request)
        return await svc.previsao(svc.scope(site, device, None))

    @get("/relatorios", responses=errors(422), opt=also_as("text/csv"))
    async def relatorios(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str | None] = None,
        device: FromQuery[str | None] = None,
        grupo: FromQuery[str | None] = None,
        tipo: Annotated[str, choice(REPORT_KINDS, "Um resumo por dia, semana ou mês.")] = "diario",
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
        formato: Annotated[str, choice(REPORT_FORMATS, "json, ou csv (text/csv, para planilhas).")] = "json",
    ) -> Response[Report | str]:
        """Resumo diário, semanal ou mensal em JSON ou CSV (números no formato brasileiro).

        Padrão: os últimos 30 dias.
        """
        if tipo not in REPORT_KINDS:
            raise BadRequestError("'tipo' deve ser diario, semanal ou mensal.")
        if formato not in REPORT_FORMATS:
            raise BadRequestError("'formato' deve ser json ou csv.")
        svc = await visible_analytics(request)
        _, _, a, b = local_range(inicio, fim, default_days=30)
        rep = await svc.relatorio(svc.scope(site, device, grupo), tipo, a, b)  # type: ignore[arg-type]
        if formato == "csv":
            name = f"relatorio-{rep.scope.replace('/', '-')}-{tipo}.csv"
            return Response(to_csv(rep), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return Response(rep)

    @get("/renovavel", responses=errors(409, 422))
    async def renovavel(
        self,
        request: Request[Any, Any, Any],
        site: FromQuery[str],
        inicio: Annotated[str | None, _START] = None,
        fim: Annotated[str | None, _END] = None,
    ) -> RenewableOut:
        """Parcela do consumo do site que coincidiu com geração renovável no seu subsistema, hora a hora.

        Hidráulica, eólica e solar, segundo o balanço do ONS; com o método e seus limites. Padrão: os últimos 30
        dias; 409 quando o subsistema do site é desconhecido (defina-o no arquivo de sites).
        """
        svc = await visible_analytics(request)
        ons = services_of(request).ons
        if ons is None:
            raise UnavailableError("Dados do ONS indisponíveis: serviço não iniciado.")
        start, end, a, b = local_range(inicio, fim, default_days=30)
        return await site_renewable(svc, ons.grid, svc.scope(site, None, None), start, end, a, b)

    @get("/alertas")
    async def alertas(self, request: Request[Any, Any, Any], site: FromQuery[str | None] = None) -> list[AlertList]:
        """Alertas atuais: medidor sem comunicação, consumo anormal, tensão fora da faixa adequada (PRODIST
        Módulo 8), fator de potência abaixo de 0,92, fila de envio de um gateway parada ou crescendo (campo
        ``gateway``), dados da ANEEL ou do ONS desatualizados e bandeira tarifária do mês seguinte diferente da
        atual; os dois últimos valem para o site inteiro (``device`` vazio)."""
        svc = await visible_analytics(request)
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


def _age(a: AlertList) -> float:
    return dt.datetime.fromisoformat(a.evaluated_at).timestamp()


async def _status(svc: AnalyticsService) -> dict[str, Any]:
    try:
        st = await svc.store.status()
        return msgspec.to_builtins(st)  # type: ignore[no-any-return]
    except InfluxError:
        return {"erro": "status indisponível", "dados_em_memoria": bool(svc.data.tariffs.records)}
