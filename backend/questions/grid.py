"""Answers about the national grid (SIN) from the ONS data this backend pulls: generation by source, load, marginal
cost (CMO) and renewable share — of a subsystem, and of the user's own kWh.

:class:`GridAnswers` holds the :class:`~backend.ons.grid.GridData` of the running app and gives the questions
service one handler per grid intent. Each runs the query that the matching endpoint runs for the same parameters
(``/api/v1/ons/agora``, ``/ons/balanco``, ``/ons/cmo``, ``/analytics/renovavel``), puts exactly that endpoint's
numbers in ``valores`` and names the call, with explicit dates, in ``consulta``.

"Agora" is the newest hour ONS has published, not the current hour: ONS publishes its balance a day or two late,
so every such answer says which hour it is and how old. A period with no published hour yet ("hoje") gets
``disponivel=False`` with the newest hour held; hours missing from a period are reported, never filled in; with
no grid data at all (never pulled, ONS down since start-up) the answer says so, with the last pull attempt.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final
from urllib.parse import urlencode

import msgspec

from backend.analytics.renewable import site_renewable
from backend.analytics.service import local_range
from backend.errors import BadRequestError
from backend.ons.balance import BalanceBucket, NowSubsystem, totals
from backend.ons.balance import Granularity as OnsGranularity
from backend.ons.datasets import GENERATION, SIN, SUBSYSTEM_NAMES, SUBSYSTEMS
from backend.ons.grid import MAX_DAYS, CmoSeries, DataAge, GridData, NoGridData
from backend.ons.store import day_start_ms
from backend.questions import formatting as fmt
from backend.questions.interpretation import Intencao, Interpretation, Periodo
from backend.questions.service import SOURCE_NAMES, Contexto, Handler, Resposta, Valor, describe
from backend.store.registers import Granularity
from protocol.timebase import HOUR_MS, TZ

CMO_DAYS_NOW: Final = 7
"""Without a period, the CMO answer is the newest half-hour and the mean of the 7 days ending on it (the
endpoint's default window)."""
LAG: Final = "o ONS publica com um ou dois dias de atraso"

_ONS_GRANULARITY: Final[dict[Granularity, OnsGranularity]] = {
    "15min": "hora", "hour": "hora", "day": "dia", "week": "dia", "month": "mes"}
_ASKED_AS: Final[dict[OnsGranularity, Granularity]] = {"hora": "hour", "dia": "day", "mes": "month"}
_PER: Final[dict[OnsGranularity, str]] = {"hora": "hora", "dia": "dia", "mes": "mês"}


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def _call(path: str, **params: str | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"GET /api/v1/{path}" + (f"?{query}" if query else "")


def _mwh(value: float, unit: str = "MWh") -> str:
    return fmt.number(value, unit, "#,##0.0")


def _pct(value: float) -> str:
    return fmt.number(value, "%", "#,##0.0")


def _rs_mwh(value: float) -> str:
    return f"{fmt.brl(_dec(round(value, 2)))}/MWh"


def _duration(seconds: float) -> str:
    hours = int(seconds // 3600)
    if hours < 1:
        return "menos de 1 hora"
    return f"{hours} h" if hours < 48 else f"{hours // 24} dias e {hours % 24} h"


def _utc_text(iso: str) -> str:
    return fmt.local_time(dt.datetime.fromisoformat(iso).astimezone(TZ).isoformat())


def _newest(age: DataAge) -> str:
    """"a hora mais recente publicada pelo ONS é a de 26/08/2026 às 23:00, encerrada há 38 h"."""
    if age.hora_mais_recente is None:
        return "não há nenhuma hora do ONS armazenada"
    text = f"a hora mais recente publicada pelo ONS é a de {fmt.local_time(age.hora_mais_recente)}"
    return text + (f", encerrada há {_duration(age.idade_s)}" if age.idade_s is not None else "")


def _stale_warnings(age: DataAge) -> list[str]:
    """A warning when the newest hour is older than ``BACKEND_ONS_STALE_S``, with the last pull and its error."""
    if not age.desatualizado:
        return []
    text = "Dados do ONS desatualizados"
    if age.ultima_sincronizacao:
        text += f": última sincronização em {_utc_text(age.ultima_sincronizacao)}"
    if age.erro_ultima_tentativa:
        text += f"; a última tentativa falhou ({age.erro_ultima_tentativa})"
    return [text + "."]


def _bucket_label(b: BalanceBucket, gran: OnsGranularity) -> str:
    start = dt.datetime.fromisoformat(b.inicio)
    return {"hora": fmt.local_time(b.inicio), "dia": fmt.day(start.date()), "mes": fmt.month(start.date())}[gran]


class GridAnswers:
    """The grid intents (geração, carga, CMO, participação renovável) answered from one app's grid data."""

    def __init__(self, grid: GridData) -> None:
        self.grid = grid

    def handlers(self) -> dict[Intencao, Handler]:
        return {"geracao": self.balance, "carga": self.balance, "renovavel": self.renewable, "cmo": self.cmo}

    async def balance(self, q: Interpretation, ctx: Contexto) -> Resposta:
        """Generation, load or renewable share of a subsystem (the SIN when none is named)."""
        code = q.subsistema or SIN
        if q.periodo is None or q.periodo.tipo == "agora":
            return await self._now(q, code)
        return await self._period(q, q.periodo, code)

    async def renewable(self, q: Interpretation, ctx: Contexto) -> Resposta:
        """The user's own kWh ("quanto do meu consumo foi renovável") or the grid's share."""
        if q.escopo.usuario:
            return await self._site_share(q, ctx)
        return await self.balance(q, ctx)

    # --- the newest hour ----------------------------------------------------------------------------------------

    async def _now(self, q: Interpretation, code: str) -> Resposta:
        call = _call("ons/agora")
        try:
            out = await self.grid.now()
        except NoGridData:
            return await self._no_data(q, call)
        age = out.idade_dos_dados
        view = next((v for v in out.subsistemas if v.subsistema == code), None)
        if view is None:  # the SIN is summed only at an hour all four subsystems have
            return Resposta(resposta=f"Sem uma hora com dados dos quatro subsistemas para somar o SIN; {_newest(age)}.",
                            disponivel=False, interpretacao=q, consulta=call, avisos=_stale_warnings(age))
        day = dt.datetime.fromisoformat(view.hora).date()
        resolved = msgspec.structs.replace(q, subsistema=code, unidade="%" if q.intencao == "renovavel" else "MWmed",
                                           periodo=Periodo(inicio=day, fim=day, tipo="agora",
                                                           texto=q.periodo.texto if q.periodo else "agora"))
        text, valores = self._now_numbers(q, view)
        if not valores:
            return Resposta(resposta=f"{text}; {_newest(age)}.", disponivel=False, interpretacao=resolved,
                            consulta=call, avisos=_stale_warnings(age))
        text += f". Hora de {fmt.local_time(view.hora)}, a mais recente publicada pelo ONS"
        text += f" (encerrada há {_duration(age.idade_s)}; {LAG})." if age.idade_s is not None else "."
        return Resposta(resposta=text, disponivel=True, interpretacao=resolved, valores=valores, consulta=call,
                        avisos=_stale_warnings(age))

    def _now_numbers(self, q: Interpretation, v: NowSubsystem) -> tuple[str, list[Valor]]:
        """The sentence (without the hour) and the values of ``/ons/agora`` for one subsystem."""
        code, where = v.subsistema, SUBSYSTEM_NAMES[v.subsistema]

        def val(nome: str, value: float, unit: str) -> Valor:
            return Valor(nome=nome, valor=_dec(value), unidade=unit, inicio=v.hora, detalhe=code)

        if q.intencao == "carga":
            if v.carga is None:
                return f"Sem valor de carga do {where} na hora mais recente", []
            text = f"Carga do {where}: {_mwh(v.carga, 'MWmed')}"
            valores = [val("carga", v.carga, "MWmed")]
            if v.intercambio is not None:
                verb = "exportou" if v.intercambio >= 0 else "importou"
                text += f" (intercâmbio: {verb} {_mwh(abs(v.intercambio), 'MWmed')})"
                valores.append(val("intercambio", v.intercambio, "MWmed"))
            return text, valores
        if q.intencao == "renovavel":
            if v.renovavel_pct is None:
                return f"Sem geração registrada no {where} na hora mais recente", []
            return (f"Participação renovável (hidráulica + eólica + solar) na geração do {where}: "
                    f"{_pct(v.renovavel_pct)}", [val("renovavel_pct", v.renovavel_pct, "%")])
        if q.fonte is not None:
            if q.fonte not in v.geracao:
                return f"Sem valor de geração {SOURCE_NAMES[q.fonte]} no {where} na hora mais recente", []
            value = v.geracao[q.fonte]
            share = f" ({_pct(100 * value / v.geracao_total)} da geração do subsistema)" if v.geracao_total else ""
            return (f"Geração {SOURCE_NAMES[q.fonte]} no {where}: {_mwh(value, 'MWmed')}{share}",
                    [val(q.fonte, value, "MWmed")])
        if not v.geracao:
            return f"Sem geração registrada no {where} na hora mais recente", []
        mix = sorted(v.geracao.items(), key=lambda kv: kv[1], reverse=True)
        parts = ", ".join(f"{SOURCE_NAMES[s]} {_mwh(x, 'MWmed')}" + (f" ({_pct(100 * x / v.geracao_total)})"
                                                                     if v.geracao_total else "") for s, x in mix)
        text = f"Geração no {where}: {_mwh(v.geracao_total, 'MWmed')} — {parts}"
        valores = [val(s, v.geracao[s], "MWmed") for s in GENERATION if s in v.geracao]
        valores.append(val("geracao_total", v.geracao_total, "MWmed"))
        if v.renovavel_pct is not None:
            text += f"; renováveis: {_pct(v.renovavel_pct)}"
            valores.append(val("renovavel_pct", v.renovavel_pct, "%"))
        return text, valores

    # --- a period -----------------------------------------------------------------------------------------------

    async def _period(self, q: Interpretation, p: Periodo, code: str) -> Resposta:
        days = (p.fim - p.inicio).days + 1
        gran: OnsGranularity = (_ONS_GRANULARITY[q.granularidade] if q.granularidade
                                else "dia" if days <= MAX_DAYS["dia"] else "mes")
        _check_period(p, days, MAX_DAYS[gran], f"por {_PER[gran]}")
        a, b = day_start_ms(p.inicio), day_start_ms(p.fim + dt.timedelta(days=1))
        call = _call("ons/balanco", subsistema=code, inicio=p.inicio.isoformat(), fim=p.fim.isoformat(),
                     granularidade=gran)
        items = await self.grid.balance(code, a, b, gran)
        age = await self.grid.age()
        if age.hora_mais_recente is None:
            return await self._no_data(q, call, age)
        field, unit = ("renovavel_pct", "%") if q.intencao == "renovavel" else \
            ("carga", "MWh") if q.intencao == "carga" else (q.fonte or "geracao_total", "MWh")
        resolved = msgspec.structs.replace(q, subsistema=code, unidade=unit, periodo=p, granularidade=(
            _ASKED_AS[gran] if q.granularidade else None))
        tot = totals(items)
        value = tot[field]
        hours = sum(x.horas for x in items)
        span = fmt.span(p.inicio, p.fim)
        if value is None or hours == 0:
            text = f"Ainda não há dados do ONS {span}: {_newest(age)} ({LAG}). Pergunte “agora” para a mais recente."
            return Resposta(resposta=text, disponivel=False, interpretacao=resolved, consulta=call,
                            avisos=_stale_warnings(age))
        where = SUBSYSTEM_NAMES[code]
        if q.intencao == "renovavel":
            text = f"Participação renovável (hidráulica + eólica + solar) na geração do {where} {span}: {_pct(value)}."
        elif q.intencao == "carga":
            text = f"Carga do {where} {span}: {_mwh(value)} (média de {_mwh(value / hours, 'MWmed')})."
        elif q.fonte is not None:
            total = tot["geracao_total"]
            share = f", {_pct(100 * value / total)} da geração do subsistema" if total else ""
            text = (f"Geração {SOURCE_NAMES[q.fonte]} no {where} {span}: {_mwh(value)} (média de "
                    f"{_mwh(value / hours, 'MWmed')}{share}).")
        else:
            mix = sorted(((s, x) for s in GENERATION if (x := tot[s]) is not None), key=lambda kv: kv[1], reverse=True)
            text = (f"Geração no {where} {span}: {_mwh(value)} — "
                    + ", ".join(f"{SOURCE_NAMES[s]} {_mwh(x)} ({_pct(100 * x / value)})" for s, x in mix)
                    + (f"; renováveis: {_pct(r)}." if (r := tot["renovavel_pct"]) is not None else "."))
        if q.intencao == "geracao" and q.fonte is None:  # the mix: every source, the total and the share
            valores = [Valor(nome=s, valor=_dec(x), unidade="%" if s == "renovavel_pct" else "MWh", detalhe=code)
                       for s in (*GENERATION, "geracao_total", "renovavel_pct") if (x := tot[s]) is not None]
        else:
            valores = [Valor(nome=field, valor=_dec(value), unidade=unit, detalhe=code)]
        if q.granularidade:
            per = [(x, got) for x in items if (got := getattr(x, field)) is not None]
            top, top_value = max(per, key=lambda xv: xv[1])
            shown = _pct(top_value) if unit == "%" else _mwh(top_value)
            text += f" Maior valor por {_PER[gran]}: {shown} ({_bucket_label(top, gran)})."
            valores += [Valor(nome=field, valor=_dec(got), unidade=unit, inicio=x.inicio, detalhe=code)
                        for x, got in per]
        avisos = _stale_warnings(age)
        if q.granularidade in ("15min", "week"):
            avisos.append(f"O balanço do ONS é por hora, dia ou mês: os valores são por {_PER[gran]}.")
        expected = (b - a) // HOUR_MS
        if hours < expected:
            avisos.append(f"Só há dados do ONS para {hours} das {expected} horas do período, e os números são dessas "
                          f"horas ({_newest(age)}; {LAG}).")
        return Resposta(resposta=text, disponivel=True, interpretacao=resolved, valores=valores, consulta=call,
                        avisos=avisos)

    # --- CMO ----------------------------------------------------------------------------------------------------

    async def cmo(self, q: Interpretation, ctx: Contexto) -> Resposta:
        """Half-hourly CMO of a subsystem, or of the four (there is no CMO of the SIN)."""
        one = q.subsistema if q.subsistema in SUBSYSTEMS else None
        codes = [one] if one else list(SUBSYSTEMS)
        avisos = ["O CMO é calculado por subsistema; não existe um CMO do SIN: seguem os quatro."] \
            if q.subsistema == SIN else []
        p = q.periodo
        latest_only = p is None or p.tipo == "agora"
        if p is None or p.tipo == "agora":
            latest = await self.grid.latest_hours()
            if not latest:
                return await self._no_data(q, _call("ons/cmo", subsistema=one))
            end = dt.datetime.fromtimestamp(max(latest.values()) / 1000, TZ).date()
            p = Periodo(inicio=end - dt.timedelta(days=CMO_DAYS_NOW - 1), fim=end, tipo="agora",
                        texto=p.texto if p else "mais recente")
        else:
            _check_period(p, (p.fim - p.inicio).days + 1, MAX_DAYS["cmo"], "do CMO")
        call = _call("ons/cmo", subsistema=one, inicio=p.inicio.isoformat(), fim=p.fim.isoformat())
        series = await self.grid.cmo(codes, day_start_ms(p.inicio), day_start_ms(p.fim + dt.timedelta(days=1)))
        age = await self.grid.age()
        if age.hora_mais_recente is None:
            return await self._no_data(q, call, age)
        avisos += _stale_warnings(age)
        resolved = msgspec.structs.replace(q, periodo=p, subsistema=one or q.subsistema)
        published = [s for s in series if s.pontos]
        span = fmt.span(p.inicio, p.fim)
        if not published:
            return Resposta(resposta=f"Sem CMO publicado pelo ONS {span}: {_newest(age)} ({LAG}).", disponivel=False,
                            interpretacao=resolved, consulta=call, avisos=avisos)
        if latest_only:
            text, valores = _cmo_latest(published, p)
        else:
            text, valores = _cmo_period(published, span, with_points=q.granularidade is not None)
            if q.granularidade is not None:
                avisos.append("O CMO é publicado por meia hora: os valores são semi-horários.")
        expected = ((p.fim - p.inicio).days + 1) * 48
        short = [f"{s.nome} ({len(s.pontos)})" for s in series if len(s.pontos) < expected]
        if short:
            avisos.append(f"Meias horas com CMO no período, de {expected}: " + ", ".join(short) + ".")
        return Resposta(resposta=text, disponivel=True, interpretacao=resolved, valores=valores, consulta=call,
                        avisos=avisos)

    # --- the user's own kWh -------------------------------------------------------------------------------------

    async def _site_share(self, q: Interpretation, ctx: Contexto) -> Resposta:
        site = ctx.site
        if site is None:
            raise BadRequestError("Informe o site da pergunta ('site').")
        today = ctx.agora.date()
        p = q.periodo if q.periodo is not None and q.periodo.tipo != "agora" else \
            Periodo(inicio=today.replace(day=1), fim=today, tipo="mes", texto="este mes")
        start, end, a, b = local_range(p.inicio.isoformat(), p.fim.isoformat())
        call = _call("analytics/renovavel", site=site.id, inicio=start.isoformat(), fim=end.isoformat())
        out = await site_renewable(ctx.analytics, self.grid, ctx.analytics.scope(site.id, None, None), start, end,
                                   a, b)
        age = out.idade_dos_dados_da_rede
        resolved = msgspec.structs.replace(q, periodo=p, subsistema=out.subsistema, unidade="%")
        name, span = site.name or site.id, fmt.span(start, end)
        avisos = _stale_warnings(age)
        if q.escopo.grupo or q.escopo.device:
            avisos.append("A parcela renovável é calculada para o site inteiro, não para um grupo ou medidor.")
        share = out.participacao_renovavel_pct
        if share is None:
            why = (f"nenhum consumo medido de {name} {span}" if out.kwh_total == 0 else
                   f"ainda não há dados do ONS para as horas de consumo de {name} {span}: {_newest(age)} ({LAG})")
            return Resposta(resposta=f"Sem parcela renovável: {why}.", disponivel=False, interpretacao=resolved,
                            consulta=call, avisos=avisos)
        text = (f"{span.capitalize()}, {_pct(share)} do consumo de {name} ({fmt.kwh(out.kwh_renovavel)} de "
                f"{fmt.kwh(out.kwh_com_dados_da_rede)}) coincidiu com geração renovável (hidráulica, eólica e solar) "
                f"no {out.nome_subsistema}")
        mean = out.participacao_media_da_rede_pct
        text += f"; a média do subsistema nas mesmas horas foi {_pct(mean)}." if mean is not None else "."
        if out.horas_sem_dados_da_rede:
            avisos.append(f"{out.horas_sem_dados_da_rede} hora(s) de consumo ({fmt.kwh(out.kwh_sem_dados_da_rede)}) "
                          f"sem dados do ONS ficaram fora da conta ({LAG}).")
        avisos.append(out.limites[0])
        valores = [Valor(nome="participacao_renovavel_pct", valor=_dec(share), unidade="%"),
                   Valor(nome="kwh_renovavel", valor=_dec(out.kwh_renovavel), unidade="kWh"),
                   Valor(nome="kwh_com_dados_da_rede", valor=_dec(out.kwh_com_dados_da_rede), unidade="kWh"),
                   Valor(nome="kwh_total", valor=_dec(out.kwh_total), unidade="kWh")]
        if mean is not None:
            valores.append(Valor(nome="participacao_media_da_rede_pct", valor=_dec(mean), unidade="%",
                                 detalhe=out.subsistema))
        return Resposta(resposta=text, disponivel=True, interpretacao=resolved, valores=valores, consulta=call,
                        avisos=avisos)

    async def _no_data(self, q: Interpretation, call: str, age: DataAge | None = None) -> Resposta:
        """Nothing from ONS stored: say so, with the last pull attempt, never a number."""
        age = age or await self.grid.age()
        text = "Ainda não há dados da rede elétrica (ONS) neste servidor"
        if age.ultima_tentativa is None:
            text += ": nenhuma sincronização com o ONS foi feita ainda"
        elif age.erro_ultima_tentativa:
            text += (f": a última tentativa de sincronização ({_utc_text(age.ultima_tentativa)}) falhou "
                     f"({age.erro_ultima_tentativa})")
        return Resposta(resposta=f"{text}. Entendi a pergunta como: {describe(q)}.", disponivel=False,
                        interpretacao=q, consulta=call)


def _check_period(p: Periodo, days: int, max_days: int, what: str) -> None:
    """The endpoint's limits, so that an answer and its ``consulta`` accept the same periods."""
    if p.inicio.year < 2000:
        raise BadRequestError("O ONS publica dados a partir de 2000.")
    if days > max_days:
        raise BadRequestError(f"Período máximo para consultas {what}: {max_days} dias.")


def _cmo_latest(series: list[CmoSeries], p: Periodo) -> tuple[str, list[Valor]]:
    times = {s.pontos[-1].inicio for s in series}
    same = len(times) == 1
    parts, valores = [], []
    for s in series:
        last = s.pontos[-1]
        parts.append(f"{s.nome} {_rs_mwh(last.rs_mwh)}" + ("" if same else
                                                           f" (meia hora de {fmt.local_time(last.inicio)})"))
        valores.append(Valor(nome="cmo", valor=_dec(last.rs_mwh), unidade="R$/MWh", inicio=last.inicio,
                             detalhe=s.subsistema))
        if s.media is not None:
            valores.append(Valor(nome="media", valor=_dec(s.media), unidade="R$/MWh", inicio=p.inicio.isoformat(),
                                 fim=p.fim.isoformat(), detalhe=s.subsistema))
    means = "; ".join(f"{s.nome} {_rs_mwh(s.media)}" for s in series if s.media is not None)
    when = f" (meia hora de {fmt.local_time(times.pop())})" if same else ""
    text = (f"Custo marginal de operação (CMO) mais recente publicado pelo ONS{when}: {'; '.join(parts)}. "
            f"Média dos {CMO_DAYS_NOW} dias até {fmt.day(p.fim)}: {means}.")
    return text, valores


def _cmo_period(series: list[CmoSeries], span: str, *, with_points: bool) -> tuple[str, list[Valor]]:
    parts, valores = [], []
    for s in series:
        if s.media is None or s.minimo is None or s.maximo is None:
            continue
        parts.append(f"{s.nome}: média {_rs_mwh(s.media)} (mínimo {_rs_mwh(s.minimo)}, máximo {_rs_mwh(s.maximo)})")
        valores += [Valor(nome=n, valor=_dec(x), unidade="R$/MWh", detalhe=s.subsistema)
                    for n, x in (("media", s.media), ("minimo", s.minimo), ("maximo", s.maximo))]
        if with_points:
            valores += [Valor(nome="cmo", valor=_dec(pt.rs_mwh), unidade="R$/MWh", inicio=pt.inicio,
                              detalhe=s.subsistema) for pt in s.pontos]
    return f"Custo marginal de operação (CMO) {span}: " + "; ".join(parts) + ".", valores
