"""What a question was understood to ask: the typed result of the parser and what it may name.

:class:`Interpretation` is the contract between the parser (which fills it from the words alone) and the
answering service (which fills in the defaults it used — period, granularity, site — before returning it in
the answer, so the user sees what was actually run). Field names are pt-BR like the rest of the API.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import msgspec

from backend.store.registers import Granularity

Intencao = Literal[
    # the user's own data
    "consumo", "custo", "previsao", "tarifa_branca", "bandeira", "demanda", "alertas", "medidores", "relatorio",
    # the national grid (SIN, ONS data)
    "geracao", "carga", "cmo", "renovavel",
    # the knowledge base ("o que é …", "por que minha conta …")
    "conhecimento",
    "desconhecido",
]
INTENCOES_DA_REDE: Final[frozenset[Intencao]] = frozenset({"geracao", "carga", "cmo", "renovavel"})

Fonte = Literal["hidraulica", "termica", "eolica", "solar"]
"""Generation sources as ONS's energy balance splits them (thermal includes nuclear and biomass)."""
Subsistema = Literal["SE", "S", "NE", "N", "SIN"]
"""ONS subsystem codes: Sudeste/Centro-Oeste, Sul, Nordeste, Norte, and the whole interconnected system."""
TipoPeriodo = Literal["dia", "semana", "mes", "ano", "intervalo", "ultimos", "proximos", "agora"]
Ciclo = Literal["atual", "anterior"]

UNIDADE_PADRAO: Final[dict[Intencao, str | None]] = {
    "consumo": "kWh", "custo": "R$", "previsao": "kWh", "tarifa_branca": "R$", "bandeira": "R$/MWh",
    "demanda": "kW", "alertas": None, "medidores": None, "relatorio": "kWh", "geracao": "MWmed",
    "carga": "MWmed", "cmo": "R$/MWh", "renovavel": "%", "conhecimento": None, "desconhecido": None,
}
"""The unit each intent answers in; ``previsao`` answers in R$ instead when the question asks about money."""


class Periodo(msgspec.Struct, frozen=True):
    """A span of local (America/Sao_Paulo) dates, both ends inclusive, and how it was said."""

    inicio: dt.date
    fim: dt.date
    tipo: TipoPeriodo
    """``mes`` for a calendar month ("em março", "mês passado"), which a bill maps to a billing cycle;
    ``ultimos``/``proximos`` for "nos últimos 7 dias"/"nos próximos dias"; ``agora`` for "agora"/"atual"."""
    texto: str = ""
    """The words it came from (normalised)."""


class Escopo(msgspec.Struct, frozen=True):
    """What the question is about when it names it: a site, a group of meters of a site, or one meter."""

    site: str | None = None
    grupo: str | None = None
    device: str | None = None
    usuario: bool = False
    """The question is about the user's own consumption ("meu consumo", "minha energia") — meaningful for the
    grid intents, where ``renovavel`` may ask about the grid or about the user's kWh."""


class Interpretation(msgspec.Struct, frozen=True):
    pergunta: str
    intencao: Intencao
    confianca: float
    """0–1: how strongly the words point at this intent; below the parser's threshold it answers desconhecido."""
    escopo: Escopo = Escopo()
    periodo: Periodo | None = None
    granularidade: Granularity | None = None
    """Only when asked ("por dia", "por hora"); the service picks one from the period otherwise."""
    fonte: Fonte | None = None
    subsistema: Subsistema | None = None
    unidade: str | None = None
    ciclo: Ciclo | None = None
    """"a última conta" (``anterior``): a billing cycle named without dates."""
    termo: str | None = None
    """For ``conhecimento``: the subject asked about ("bandeira tarifaria")."""
    normalizada: str = ""
    """The question as the parser read it: lower case, no accents, abbreviations expanded, typos corrected."""
    palavras_desconhecidas: list[str] = msgspec.field(default_factory=list)
    """Words nothing explained (why a question fell to ``desconhecido``)."""


class SiteVocab(msgspec.Struct, frozen=True):
    id: str
    nome: str = ""
    grupos: list[str] = msgspec.field(default_factory=list)
    dispositivos: list[str] = msgspec.field(default_factory=list)


class Vocabulario(msgspec.Struct, frozen=True):
    """The names a question may use for scopes: the configured sites, their groups and meters."""

    sites: list[SiteVocab] = msgspec.field(default_factory=list)
