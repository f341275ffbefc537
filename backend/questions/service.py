"""The answering service: a question in, a :class:`Resposta` out, through a registry of handlers per intent.

:meth:`QuestionService.answer` parses the question (:func:`~backend.questions.parser.parse`) with the configured
sites as vocabulary, settles which site it is about (the one named in the question, the one given with it, or
the only one configured), and hands the interpretation to the handler registered for its intent. Handlers are
plain async callables ``(Interpretation, Contexto) -> Resposta``:

* the user's own data (consumo, custo, previsão, Tarifa Branca, bandeira, demanda, alertas, medidores,
  relatório) is answered from :class:`~backend.analytics.service.AnalyticsService` by
  :data:`backend.questions.own_data.HANDLERS`;
* the grid (geração, carga, CMO, participação renovável) from the stored ONS data by
  :class:`backend.questions.grid.GridAnswers`, and "o que é …" from the knowledge base by
  :func:`backend.questions.knowledge.conhecimento`;
* an intent without a handler (the ONS service not running) gets :func:`not_available`: an honest "not on this
  server" with ``disponivel=False``, never a made-up number. The registry is the controller's:
  ``QuestionService(analytics, {**HANDLERS, **GridAnswers(grid).handlers(), "conhecimento": conhecimento})``.

A question that is not understood gets "Não sei responder a essa pergunta." with examples of what is
understood. An error the analytics raise for the data (no tariff, too long a period) becomes an answer with
``disponivel=False`` and the reason; errors of the request itself (empty question, which site) are raised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import msgspec

from backend.analytics.service import AnalyticsService
from backend.aneel.sites import SiteConfig
from backend.errors import ApiError, BadRequestError, NotFoundError
from backend.questions.interpretation import (
    INTENCOES_DA_REDE,
    Escopo,
    Intencao,
    Interpretation,
    SiteVocab,
    Vocabulario,
)
from backend.questions.parser import parse
from protocol.timebase import TZ

MAX_CHARS: Final = 300
"""Longest question accepted; longer text is not a question people type."""

NEEDS_SITE: Final[frozenset[Intencao]] = frozenset(
    {"consumo", "custo", "previsao", "tarifa_branca", "demanda", "relatorio"})
"""Intents answered for one site (or a group or meter of it); alertas and medidores cover every site if none."""

EXEMPLOS: Final = (
    "Quanto consumi ontem?",
    "Quanto deu a conta do mês passado?",
    "Quanto vou gastar este mês?",
    "Vale a pena mudar para a Tarifa Branca?",
    "Qual a bandeira deste mês?",
    "Qual foi o pico de consumo da semana passada?",
    "Tem algum alerta?",
    "Quais medidores estão funcionando?",
    "Me manda o relatório mensal deste ano.",
    "Qual a geração eólica no Nordeste agora?",
    "O que é bandeira tarifária?",
)


class Valor(msgspec.Struct, frozen=True, omit_defaults=True):
    """One number of an answer, with its unit; ``inicio``/``fim`` when it belongs to part of the period."""

    nome: str
    valor: Decimal
    """Exact decimal text, like the amounts of ``/custo`` (kWh as the analytics round them, R$ to the cent)."""
    unidade: str
    inicio: str | None = None
    fim: str | None = None
    detalhe: str | None = None


class Citacao(msgspec.Struct, frozen=True):
    """Where an explanation comes from: the knowledge-base article or doc section, and what it cites."""

    titulo: str
    fonte: str
    """The regulation or document the text comes from (ANEEL's REN/REH, PRODIST, ONS), or the doc section."""
    ref: str
    """Path in the repo (``backend/knowledge/artigos/x.md``, ``docs/x.md#anchor``)."""


class Resposta(msgspec.Struct, frozen=True):
    resposta: str
    """The answer as a pt-BR sentence, numbers written the Brazilian way."""
    disponivel: bool
    """False when the server cannot answer this kind of question (or this one) with data."""
    interpretacao: Interpretation
    """What was understood, with the defaults that were used filled in (site, period, granularity)."""
    valores: list[Valor] = msgspec.field(default_factory=list)
    consulta: str | None = None
    """The API call that produced the numbers (the same numbers come back from it)."""
    avisos: list[str] = msgspec.field(default_factory=list)
    exemplos: list[str] = msgspec.field(default_factory=list)
    citacoes: list[Citacao] = msgspec.field(default_factory=list)
    """The sources of an explanation (knowledge-base answers), the first being the one the answer quotes."""


@dataclass(frozen=True)
class Contexto:
    """What a handler gets besides the interpretation."""

    analytics: AnalyticsService
    agora: dt.datetime
    """Aware, America/Sao_Paulo: the clock the question was asked at."""
    site: SiteConfig | None
    """The configured site the question is about (None for questions that need none)."""


Handler = Callable[[Interpretation, Contexto], Awaitable[Resposta]]


def vocabulary_of(sites: Mapping[str, SiteConfig]) -> Vocabulario:
    return Vocabulario(sites=[SiteVocab(id=s.id, nome=s.name, grupos=sorted(s.groups), dispositivos=list(s.devices))
                              for s in sites.values()])


class QuestionService:
    def __init__(self, analytics: AnalyticsService, handlers: Mapping[Intencao, Handler]) -> None:
        self.analytics = analytics
        self.handlers = dict(handlers)
        self.vocabulario = vocabulary_of(analytics.sites)

    async def answer(self, pergunta: str, site: str | None, agora: dt.datetime) -> Resposta:
        text = " ".join(pergunta.split())
        if not text:
            raise BadRequestError("Escreva uma pergunta.")
        if len(text) > MAX_CHARS:
            raise BadRequestError(f"Pergunta longa demais: no máximo {MAX_CHARS} caracteres.")
        if site is not None and site not in self.analytics.sites:
            raise NotFoundError(f"Site '{site}' não configurado.")
        agora = agora.astimezone(TZ)
        q = parse(text, agora, self.vocabulario)
        if q.intencao == "desconhecido":
            return self._unknown(q)
        about_user = q.intencao not in INTENCOES_DA_REDE | {"conhecimento"} or q.escopo.usuario
        cfg = self._site_for(q, site) if about_user else None
        if cfg is not None and q.escopo.site != cfg.id:
            q = msgspec.structs.replace(q, escopo=msgspec.structs.replace(q.escopo, site=cfg.id))
        handler = self.handlers.get(q.intencao, not_available)
        try:
            return await handler(q, Contexto(analytics=self.analytics, agora=agora, site=cfg))
        except ApiError as exc:
            if exc.status_code >= 500:
                raise
            return Resposta(resposta=exc.detail, disponivel=False, interpretacao=q)

    def _site_for(self, q: Interpretation, site: str | None) -> SiteConfig | None:
        sites = self.analytics.sites
        named = q.escopo.site
        if named and site and named != site:
            raise BadRequestError(f"A pergunta fala do site '{named}', mas foi feita para o site '{site}'.")
        chosen = named or site
        if chosen is None and len(sites) == 1:
            chosen = next(iter(sites))
        if chosen is None:
            if q.intencao in NEEDS_SITE or q.intencao == "renovavel":
                ids = ", ".join(sorted(sites)) or "nenhum"
                raise BadRequestError(f"Informe o site da pergunta ('site'): sites configurados: {ids}.")
            return None
        return sites.get(chosen)

    def _unknown(self, q: Interpretation) -> Resposta:
        text = "Não sei responder a essa pergunta."
        if q.palavras_desconhecidas:
            text += f" Não reconheci: {', '.join(q.palavras_desconhecidas)}."
        groups = sorted({g for s in self.vocabulario.sites for g in s.grupos})
        if groups:
            text += f" Grupos configurados: {', '.join(groups)}."
        text += " Exemplos do que sei responder: " + " ".join(EXEMPLOS)
        return Resposta(resposta=text, disponivel=False, interpretacao=q, exemplos=list(EXEMPLOS))


async def not_available(q: Interpretation, ctx: Contexto) -> Resposta:
    """The answer for an intent whose data this server does not have (no handler registered for it)."""
    if q.intencao in INTENCOES_DA_REDE:
        what = ("Os dados da rede elétrica nacional (ONS: geração, carga, CMO, participação renovável) não estão "
                "disponíveis")
    elif q.intencao == "conhecimento":
        what = "A base de conhecimento (termos da conta de luz e do setor elétrico) não está disponível"
    else:
        what = "Esta informação não está disponível"
    return Resposta(resposta=f"{what} neste servidor. Entendi a pergunta como: {describe(q)}.",
                    disponivel=False, interpretacao=q)


_INTENT_NAMES: Final[dict[Intencao, str]] = {
    "consumo": "consumo", "custo": "custo da energia", "previsao": "previsão", "tarifa_branca": "Tarifa Branca",
    "bandeira": "bandeira tarifária", "demanda": "demanda máxima", "alertas": "alertas", "medidores": "medidores",
    "relatorio": "relatório", "geracao": "geração", "carga": "carga", "cmo": "custo marginal de operação (CMO)",
    "renovavel": "participação renovável", "conhecimento": "explicação", "desconhecido": "pergunta não entendida",
}
_SUBSYSTEMS: Final = {"SE": "Sudeste/Centro-Oeste", "S": "Sul", "NE": "Nordeste", "N": "Norte",
                      "SIN": "todo o SIN"}
SOURCE_NAMES: Final[dict[str, str]] = {"hidraulica": "hidráulica", "termica": "térmica", "eolica": "eólica",
                                      "solar": "solar"}
"""Generation sources as written in answers."""


def describe(q: Interpretation) -> str:
    """The interpretation in a few pt-BR words ("geração eólica, Nordeste, agora")."""
    parts = [_INTENT_NAMES[q.intencao]]
    if q.fonte:
        parts[0] += f" {SOURCE_NAMES[q.fonte]}"
    if q.subsistema:
        parts.append(_SUBSYSTEMS[q.subsistema])
    if q.escopo.usuario:
        parts.append("o seu consumo")
    if q.termo:
        parts.append(f"“{q.termo}”")
    if q.periodo is not None:
        p = q.periodo
        if p.tipo == "agora":
            parts.append("agora")
        else:
            parts.append(f"{p.inicio:%d/%m/%Y}" if p.inicio == p.fim else f"{p.inicio:%d/%m/%Y} a {p.fim:%d/%m/%Y}")
    if q.granularidade:
        parts.append(f"por {dict(hour='hora', day='dia', week='semana', month='mês').get(q.granularidade, '15 min')}")
    return ", ".join(parts)


def escopo_label(escopo: Escopo, site: SiteConfig | None) -> str:
    """"Casa no Rio", "cozinha (Casa no Rio)", "medidor 00000000000000a1"."""
    if escopo.device:
        return f"medidor {escopo.device}"
    name = (site.name or site.id) if site is not None else (escopo.site or "")
    return f"{escopo.grupo} ({name})" if escopo.grupo else name
