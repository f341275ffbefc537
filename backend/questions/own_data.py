"""Answers about the user's own data, from :class:`~backend.analytics.service.AnalyticsService`.

Each handler makes exactly the service call that the matching ``/api/v1/analytics/...`` endpoint makes for the
same parameters, so the numbers in ``valores`` are the endpoint's numbers, and it says which call that is in
``consulta``. Defaults when the question gives none: consumption and peak for the current month so far; the
bill for the running billing cycle; Tarifa Branca and reports for the last 30 days (the endpoints' default); the
forecast for the next 7 days; the bandeira of the current month. A bill asked by month ("a conta de maio") is
the billing cycle read in that month (see ``docs/perguntas.md``).
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Final
from urllib.parse import urlencode

import msgspec

from backend.analytics.reports import ReportKind
from backend.analytics.service import Scope, local_range
from backend.aneel.sites import SiteConfig
from backend.aneel.tariffs import TariffError
from backend.errors import BadRequestError
from backend.questions import formatting as fmt
from backend.questions.interpretation import Intencao, Interpretation, Periodo
from backend.questions.periods import month_end
from backend.questions.service import Contexto, Handler, Resposta, Valor, escopo_label
from backend.store.registers import Granularity

CENT: Final = Decimal("0.01")


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def _call(path: str, **params: str | None) -> str:
    return f"GET /api/v1/{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"


def _scope_params(q: Interpretation) -> dict[str, str | None]:
    """The scope as the analytics endpoints take it: ``device``, or ``site`` (+ ``grupo``)."""
    if q.escopo.device:
        return {"device": q.escopo.device}
    return {"site": q.escopo.site, "grupo": q.escopo.grupo}


def _scope(q: Interpretation, ctx: Contexto) -> Scope:
    p = _scope_params(q)
    return ctx.analytics.scope(p.get("site"), p.get("device"), p.get("grupo"))


def _site_only(q: Interpretation, what: str) -> Resposta | None:
    """Bills, Tarifa Branca and forecasts are per site (or meter, for the forecast): say so for a group."""
    if q.escopo.grupo or (q.escopo.device and what != "previsão"):
        unit = "site ou medidor" if what == "previsão" else "site inteiro (a conta é por site)"
        return Resposta(resposta=f"A {what} é calculada por {unit}; para um grupo, pergunte o consumo em kWh.",
                        disponivel=False, interpretacao=q)
    return None


def _today(ctx: Contexto) -> dt.date:
    return ctx.agora.date()


def _period(q: Interpretation, ctx: Contexto, default: str) -> Periodo:
    if q.periodo is not None:
        return q.periodo
    today = _today(ctx)
    if default == "mes":
        return Periodo(inicio=today.replace(day=1), fim=today, tipo="mes", texto="este mes")
    return Periodo(inicio=today - dt.timedelta(days=29), fim=today, tipo="ultimos", texto="ultimos 30 dias")


def _default_granularity(p: Periodo) -> Granularity:
    days = (p.fim - p.inicio).days + 1
    return "hour" if days == 1 else "day" if days <= 62 else "month"


def _resolved(q: Interpretation, periodo: Periodo | None, gran: Granularity | None = None) -> Interpretation:
    return msgspec.structs.replace(q, periodo=periodo, granularidade=gran)


# --- consumption and peak demand ------------------------------------------------------------------------------


async def consumo(q: Interpretation, ctx: Contexto) -> Resposta:
    p = _period(q, ctx, "mes")
    gran = q.granularidade or _default_granularity(p)
    _, _, a, b = local_range(p.inicio.isoformat(), p.fim.isoformat())
    if gran == "15min" and (p.fim - p.inicio).days >= 40:
        raise BadRequestError("Granularidade de 15 min limitada a 40 dias.")
    c = await ctx.analytics.consumo(_scope(q, ctx), a, b, gran)
    who = escopo_label(q.escopo, ctx.site)
    text = f"Consumo de {who} {fmt.span(p.inicio, p.fim)}: {fmt.kwh(c.kwh_total)}."
    valores = [Valor(nome="consumo", valor=_dec(c.kwh_total), unidade="kWh")]
    if q.granularidade and c.buckets:
        top = max(c.buckets, key=lambda x: x.kwh)
        mean = c.kwh_total / len(c.buckets)
        unit = {"15min": "quarto de hora", "hour": "hora", "day": "dia", "week": "semana", "month": "mês"}[gran]
        text += (f" Maior consumo por {unit}: {fmt.kwh(top.kwh)} ({_bucket_label(top.start, gran)});"
                 f" média de {fmt.kwh(round(mean, 3))} por {unit}.")
        valores += [Valor(nome="consumo", valor=_dec(x.kwh), unidade="kWh", inicio=x.start) for x in c.buckets]
    avisos = []
    if c.kwh_total == 0:
        avisos.append("Nenhuma medição de energia no período.")
    elif c.gaps:
        avisos.append(f"{len(c.gaps)} lacuna(s) de dados no período: a energia foi distribuída pelo intervalo.")
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, p, gran), valores=valores,
                    consulta=_call("analytics/consumo", **_scope_params(q), inicio=p.inicio.isoformat(),
                                   fim=p.fim.isoformat(), granularidade=gran), avisos=avisos)


def _bucket_label(start: str, gran: Granularity) -> str:
    t = dt.datetime.fromisoformat(start)
    if gran in ("15min", "hour"):
        return fmt.local_time(start)
    if gran == "week":
        return f"semana de {fmt.day(t.date())}"
    return fmt.month(t.date()) if gran == "month" else fmt.day(t.date())


async def demanda(q: Interpretation, ctx: Contexto) -> Resposta:
    p = _period(q, ctx, "mes")
    gran = q.granularidade or "day"
    _, _, a, b = local_range(p.inicio.isoformat(), p.fim.isoformat())
    c = await ctx.analytics.consumo(_scope(q, ctx), a, b, gran)
    call = _call("analytics/consumo", **_scope_params(q), inicio=p.inicio.isoformat(), fim=p.fim.isoformat(),
                 granularidade=gran)
    resolved = _resolved(q, p, gran)
    who = escopo_label(q.escopo, ctx.site)
    if c.peak_kw is None or c.peak_at is None:
        why = ("a demanda máxima só é calculada para períodos de até 40 dias" if (p.fim - p.inicio).days >= 40
               else "não há medições suficientes no período")
        return Resposta(resposta=f"Sem demanda máxima de {who} {fmt.span(p.inicio, p.fim)}: {why}.",
                        disponivel=False, interpretacao=resolved, consulta=call)
    text = (f"A demanda máxima de {who} {fmt.span(p.inicio, p.fim)} foi {fmt.kw(c.peak_kw)}, na janela de 15 minutos"
            f" que começou em {fmt.local_time(c.peak_at)}.")
    return Resposta(resposta=text, disponivel=True, interpretacao=resolved, consulta=call,
                    valores=[Valor(nome="demanda_maxima", valor=_dec(c.peak_kw), unidade="kW", inicio=c.peak_at)])


# --- cost -----------------------------------------------------------------------------------------------------


def _cycle(q: Interpretation, site: SiteConfig, today: dt.date) -> tuple[dt.date, dt.date, dict[str, str]]:
    """The dates a bill question is about and the ``/custo`` parameters that give them."""
    p = q.periodo
    if q.ciclo == "anterior":
        ref = site.cycle_for(today)[0] - dt.timedelta(days=1)
    elif p is None:
        ref = today
    elif p.tipo == "mes":  # "a conta de maio": the cycle read in May (the calendar month without a reading day)
        ref = p.inicio.replace(day=min(site.billing_day, 28)) if site.billing_day > 0 else p.inicio
    else:
        return p.inicio, p.fim, {"inicio": p.inicio.isoformat(), "fim": p.fim.isoformat()}
    start, end = site.cycle_for(ref)
    return start, end, {"referencia": ref.isoformat()}


async def custo(q: Interpretation, ctx: Contexto) -> Resposta:
    if (refused := _site_only(q, "conta")) is not None:
        return refused
    site = ctx.analytics.site_of(_scope(q, ctx))
    if q.unidade == "R$/kWh":
        return await _price(q, ctx, site)
    start, end, params = _cycle(q, site, _today(ctx))
    _, _, a, b = local_range(start.isoformat(), end.isoformat())
    bill = await ctx.analytics.custo(_scope(q, ctx), start, end, a, b)
    what = "do ciclo" if "referencia" in params else ""
    text = (f"Conta estimada {what} {fmt.span(start, end)} ({site.name or site.id}, {bill.modality}): "
            f"{fmt.brl(bill.total)} com tributos, para {fmt.kwh(bill.kwh_total)}.").replace("  ", " ")
    if bill.kwh_total > 0:
        text += f" Em média {fmt.brl((bill.total / bill.kwh_total).quantize(CENT))} por kWh."
    periodo = Periodo(inicio=start, fim=end, tipo=q.periodo.tipo if q.periodo else "intervalo",
                      texto=q.periodo.texto if q.periodo else "ciclo de faturamento")
    taxes = sum((t.amount for t in bill.taxes), Decimal(0))
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, periodo),
                    valores=[Valor(nome="total", valor=bill.total, unidade="R$"),
                             Valor(nome="consumo", valor=bill.kwh_total, unidade="kWh"),
                             Valor(nome="subtotal_sem_tributos", valor=bill.subtotal, unidade="R$"),
                             Valor(nome="tributos", valor=taxes, unidade="R$")],
                    consulta=_call("analytics/custo", site=site.id, **params), avisos=list(bill.warnings))


async def _price(q: Interpretation, ctx: Contexto, site: SiteConfig) -> Resposta:
    out = await ctx.analytics.previsao(_scope(q, ctx))
    call = _call("analytics/previsao", site=site.id)
    if out.price_rs_kwh is None:
        return Resposta(resposta=f"Sem tarifa da ANEEL para {site.name or site.id} hoje.", disponivel=False,
                        interpretacao=q, consulta=call)
    text = (f"O kWh de {site.name or site.id} custa hoje {fmt.brl(out.price_rs_kwh.quantize(CENT))} com tributos e "
            f"a bandeira do mês ({fmt.number(out.price_rs_kwh, 'R$/kWh', '#,##0.000000')}).")
    return Resposta(resposta=text, disponivel=True, interpretacao=q, consulta=call,
                    valores=[Valor(nome="preco_kwh", valor=out.price_rs_kwh, unidade="R$/kWh")])


async def tarifa_branca(q: Interpretation, ctx: Contexto) -> Resposta:
    if (refused := _site_only(q, "comparação com a Tarifa Branca")) is not None:
        return refused
    p = _period(q, ctx, "30")
    start, end, a, b = local_range(p.inicio.isoformat(), p.fim.isoformat())
    out = await ctx.analytics.tarifa_branca(_scope(q, ctx), start, end, a, b)
    conv, branca, diff = out.convencional.total, out.branca.total, out.saving_rs
    verdict = (f"a Branca sairia {fmt.brl(diff)} mais barata" if diff > 0 else
               f"a Branca sairia {fmt.brl(-diff)} mais cara" if diff < 0 else "as duas custariam o mesmo")
    text = (f"{fmt.span(p.inicio, p.fim).capitalize()}, a mesma energia custaria {fmt.brl(branca)} na Tarifa Branca "
            f"e {fmt.brl(conv)} na Convencional: {verdict}. {out.recommendation}")
    if out.hours:
        text += f" A hora que mais pesa na diferença é a das {out.hours[0]['hora']} h."
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, p),
                    valores=[Valor(nome="convencional", valor=conv, unidade="R$"),
                             Valor(nome="branca", valor=branca, unidade="R$"),
                             Valor(nome="economia_com_branca", valor=diff, unidade="R$")],
                    consulta=_call("analytics/tarifa-branca", site=out.site, inicio=p.inicio.isoformat(),
                                   fim=p.fim.isoformat()))


# --- forecast ---------------------------------------------------------------------------------------------------


async def previsao(q: Interpretation, ctx: Contexto) -> Resposta:
    if (refused := _site_only(q, "previsão")) is not None:
        return refused
    out = await ctx.analytics.previsao(_scope(q, ctx))
    call = _call("analytics/previsao", **_scope_params(q))
    fc, today, p = out.forecast, _today(ctx), q.periodo
    last = month_end(today)
    money = q.unidade == "R$" and out.price_rs_kwh is not None
    if p is not None and p.fim == last and p.inicio <= today:
        whole = p.inicio == today.replace(day=1)
        kwh = fc.rest_of_month.kwh + (out.month_to_date_kwh if whole else 0.0)
        low = fc.rest_of_month.low + (out.month_to_date_kwh if whole else 0.0)
        high = fc.rest_of_month.high + (out.month_to_date_kwh if whole else 0.0)
        label = f"{fmt.month(today)} inteiro" if whole else f"o restante de {fmt.month(today)}"
        start = p.inicio
    elif p is None or (p.tipo == "proximos" and p.inicio == today and (p.fim - today).days == 6):
        kwh, low, high, label, start = (fc.next_7_days.kwh, fc.next_7_days.low, fc.next_7_days.high,
                                        "os próximos 7 dias", today)
        last = today + dt.timedelta(days=6)
    else:
        days = {d.date: d for d in fc.days}
        wanted = [(p.inicio + dt.timedelta(days=i)).isoformat() for i in range((p.fim - p.inicio).days + 1)]
        if not all(w in days for w in wanted):
            return Resposta(resposta="Só prevejo os próximos 7 dias e o restante do mês corrente.",
                            disponivel=False, interpretacao=q, consulta=call)
        kwh = sum(days[w].kwh for w in wanted)
        low, high = sum(days[w].low for w in wanted), sum(days[w].high for w in wanted)
        label, start, last = fmt.span(p.inicio, p.fim).removeprefix("em "), p.inicio, p.fim
    kwh, low, high = round(kwh, 3), round(low, 3), round(high, 3)
    text = f"Previsão para {label}: {fmt.kwh(kwh)} (entre {fmt.kwh(low)} e {fmt.kwh(high)}, intervalo de 80 %)"
    valores = [Valor(nome="consumo_previsto", valor=_dec(kwh), unidade="kWh")]
    if money and out.price_rs_kwh is not None:
        cost = (_dec(kwh) * out.price_rs_kwh).quantize(CENT)
        text += f", cerca de {fmt.brl(cost)} a {fmt.brl(out.price_rs_kwh.quantize(Decimal('0.0001')))} por kWh"
        valores.append(Valor(nome="custo_previsto", valor=cost, unidade="R$"))
    elif q.unidade == "R$":
        text += " (sem tarifa da ANEEL para estimar o valor em reais)"
    bt = fc.backtest
    text += "." + (f" Erro médio nos testes das últimas semanas: {fmt.kwh(bt.mae_method_kwh)} por dia." if bt else "")
    periodo = Periodo(inicio=start, fim=last, tipo="proximos", texto=p.texto if p else "proximos 7 dias")
    avisos = [] if out.history_days >= 14 else [f"Só {out.history_days} dia(s) de histórico: previsão pouco confiável."]
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, periodo), valores=valores,
                    consulta=call, avisos=avisos)


# --- bandeira, alerts, meters, reports ---------------------------------------------------------------------------


async def bandeira(q: Interpretation, ctx: Contexto) -> Resposta:
    p = q.periodo or Periodo(inicio=_today(ctx).replace(day=1), fim=_today(ctx), tipo="mes", texto="este mes")
    months: list[dt.date] = []
    m = p.inicio.replace(day=1)
    while m <= p.fim and len(months) < 24:
        months.append(m)
        m = month_end(m) + dt.timedelta(days=1)
    data = ctx.analytics.data
    await data.load()
    call = _call("aneel/bandeiras", desde=months[0].isoformat())
    try:
        flags = [data.flags.flag_for(x) for x in months]
    except TariffError:
        return Resposta(resposta="As bandeiras da ANEEL ainda não foram sincronizadas neste servidor.",
                        disponivel=False, interpretacao=q, consulta=call)
    parts = []
    for f in flags:
        note = " (ainda não publicada: repetida a última publicada)" if f.source == "estimada" else ""
        extra = (f", {fmt.brl(f.adder_rs_mwh)} por MWh a mais ({fmt.number(f.adder_rs_mwh / 1000, '', '#,##0.00###')}"
                 " R$/kWh)") if f.adder_rs_mwh else ", sem acréscimo"
        parts.append(f"{fmt.month(f.month)}: {f.flag}{extra}{note}")
    text = ("Bandeira tarifária de " if len(parts) == 1 else "Bandeiras tarifárias — ") + "; ".join(parts) + "."
    valores = [Valor(nome="adicional_bandeira", valor=f.adder_rs_mwh, unidade="R$/MWh", inicio=f.month.isoformat(),
                     detalhe=f.flag) for f in flags]
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, p), valores=valores, consulta=call)


async def alertas(q: Interpretation, ctx: Contexto) -> Resposta:
    svc, engine = ctx.analytics, ctx.analytics.alerts
    call = _call("analytics/alertas", site=ctx.site.id if ctx.site else None)
    if engine is None:
        return Resposta(resposta="Os alertas estão desativados neste servidor.", disponivel=False, interpretacao=q,
                        consulta=call)
    sites = [ctx.site] if ctx.site else list(svc.sites.values())
    lines, valores = [], []
    for s in sites:
        current = engine.current.get(s.id)
        age = time.time() - dt.datetime.fromisoformat(current.evaluated_at).timestamp() if current else None
        if current is None or age is None or age > svc.settings.alerts_interval_s * 2:
            current = await engine.evaluate_site(s)
        name = s.name or s.id
        if not current.alerts:
            lines.append(f"{name}: nenhum alerta ativo")
        else:
            items = "; ".join(f"{a.message} ({'crítico' if a.severity == 'critico' else 'aviso'})"
                              for a in current.alerts)
            lines.append(f"{name}: {len(current.alerts)} alerta(s) — {items}")
        valores.append(Valor(nome="alertas", valor=Decimal(len(current.alerts)), unidade="alertas", detalhe=s.id))
    avisos = ["Os alertas são os de agora; o histórico de alertas não é guardado."] if q.periodo else []
    return Resposta(resposta=". ".join(lines) + ".", disponivel=True, interpretacao=q, valores=valores,
                    consulta=call, avisos=avisos)


async def medidores(q: Interpretation, ctx: Contexto) -> Resposta:
    svc, engine = ctx.analytics, ctx.analytics.alerts
    sites = [ctx.site] if ctx.site else list(svc.sites.values())
    calls = [_call("analytics/sites").removesuffix("?")]
    lines, valores = [], []
    for s in sites:
        devices = [q.escopo.device] if q.escopo.device else list(s.devices)
        offline: set[str] | None = None
        if engine is not None:
            current = engine.current.get(s.id) or await engine.evaluate_site(s)
            offline = {a.device for a in current.alerts if a.kind == "offline"}
            calls.append(_call("analytics/alertas", site=s.id))
        groups = {d: g for g, ds in s.groups.items() for d in ds}
        names = [f"{d}" + (f" ({groups[d]})" if d in groups else "") for d in devices]
        line = f"{s.name or s.id}: {len(devices)} medidor(es) configurado(s) — {', '.join(names) or 'nenhum'}"
        if offline is not None:
            down = [d for d in devices if d in offline]
            line += f"; sem comunicação: {', '.join(down)}" if down else "; todos comunicando"
        lines.append(line)
        valores.append(Valor(nome="medidores", valor=Decimal(len(devices)), unidade="medidores", detalhe=s.id))
        if offline is not None:
            valores.append(Valor(nome="sem_comunicacao", valor=Decimal(len([d for d in devices if d in offline])),
                                 unidade="medidores", detalhe=s.id))
    avisos = [] if engine is not None else ["Situação de comunicação indisponível: alertas desativados."]
    return Resposta(resposta=". ".join(lines) + ".", disponivel=True, interpretacao=q, valores=valores,
                    consulta="; ".join(calls), avisos=avisos)


_KINDS: Final[dict[Granularity, ReportKind]] = {"day": "diario", "week": "semanal", "month": "mensal"}
_GRANULARITY_OF: Final[dict[ReportKind, Granularity]] = {k: g for g, k in _KINDS.items()}


async def relatorio(q: Interpretation, ctx: Contexto) -> Resposta:
    p = _period(q, ctx, "30")
    kind: ReportKind = _KINDS.get(q.granularidade or "day", "diario")
    _, _, a, b = local_range(p.inicio.isoformat(), p.fim.isoformat())
    rep = await ctx.analytics.relatorio(_scope(q, ctx), kind, a, b)
    params = {**_scope_params(q), "tipo": kind, "inicio": p.inicio.isoformat(), "fim": p.fim.isoformat()}
    text = (f"Relatório {kind} de {escopo_label(q.escopo, ctx.site)} {fmt.span(p.inicio, p.fim)}: {len(rep.rows)} "
            f"período(s), {fmt.kwh(rep.total_kwh)} no total")
    text += f", custo estimado {fmt.brl(rep.total_cost_rs)}." if rep.total_cost_rs is not None else "."
    text += f" Planilha: {_call('analytics/relatorios', **params, formato='csv')}"
    valores = [Valor(nome="consumo", valor=_dec(rep.total_kwh), unidade="kWh")]
    if rep.total_cost_rs is not None:
        valores.append(Valor(nome="custo_estimado", valor=rep.total_cost_rs, unidade="R$"))
    valores += [Valor(nome="consumo", valor=_dec(r.kwh), unidade="kWh", inicio=r.start, fim=r.end, detalhe=r.period)
                for r in rep.rows]
    return Resposta(resposta=text, disponivel=True, interpretacao=_resolved(q, p, _GRANULARITY_OF[kind]),
                    valores=valores, consulta=_call("analytics/relatorios", **params))


HANDLERS: Final[dict[Intencao, Handler]] = {
    "consumo": consumo, "custo": custo, "previsao": previsao, "tarifa_branca": tarifa_branca, "bandeira": bandeira,
    "demanda": demanda, "alertas": alertas, "medidores": medidores, "relatorio": relatorio,
}
"""The handlers of the user's own data, by intent."""
