"""pt-BR question -> :class:`~backend.questions.interpretation.Interpretation`, deterministic and offline.

The method (``docs/perguntas.md`` has examples and limits):

1. **Words** (:mod:`~backend.questions.normalize`): no accents, abbreviations expanded, typos corrected.
2. **Scope** (:mod:`~backend.questions.scope`): a configured site, group or meter named in the question.
3. **Knowledge**: "o que é …", "por que minha conta …", "como funciona …" ask for an explanation; the rest of
   the sentence is the subject (``termo``).
4. **Period** (:mod:`~backend.questions.periods`), **granularity**, **source**, **subsystem** (regions and
   states), **billing cycle** ("a última conta"): each found by its own patterns and taken out of the text.
5. **Intent**: every intent has weighted cue patterns; the words left are scored and the best intent wins,
   with a few rules that read the combination (a subsystem turns "consumo" into the grid's ``carga``, a verb in
   the future turns "conta" into ``previsao``, a group turns "gastou" into ``consumo`` since bills are per site).
6. **Doubt**: below a minimum score, or with a word left over that nothing explained ("a geladeira", "o
   mercado", "um carro": maybe a name CDS does not know), the answer is ``desconhecido`` — a question is
   better unanswered than answered about something else.

The clock is an argument (``now``, aware, converted to America/Sao_Paulo), so the same question always parses
the same way in tests.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Final, NamedTuple, TypeVar

import msgspec

from backend.questions.interpretation import (
    INTENCOES_DA_REDE,
    UNIDADE_PADRAO,
    Ciclo,
    Escopo,
    Fonte,
    Intencao,
    Interpretation,
    Periodo,
    Subsistema,
    Vocabulario,
)
from backend.questions.lexicon import MONTHS, NEUTRAL, STATES, WEEKDAYS, words
from backend.questions.normalize import Speller, tokens
from backend.questions.periods import clamp, find_period
from backend.questions.scope import find_scope, names
from backend.store.registers import Granularity
from protocol.timebase import TZ

MIN_SCORE: Final = 2.0
T = TypeVar("T")

# (intent, pattern, weight): patterns run on the normalised text with the scope, period and slots taken out.
CUES: Final[list[tuple[Intencao, str, float]]] = [
    ("consumo", r"consum\w*", 3), ("consumo", r"kwh", 4.5), ("consumo", r"quanto de (?:energia|luz)", 1),
    ("consumo", r"gast\w* (?:\w+ )?energia|energia (?:\w+ ){0,3}gast\w*", 3),
    ("consumo", r"us(?:ei|ou|amos|aram|ado|ada)|utiliz(?:ei|ou|amos|aram|ado|ada)", 2.5),
    ("custo", r"(?<!me )(?<!por )contas?", 3), ("custo", r"faturas?", 3),
    ("custo", r"cust(?:o|os|ou|a|am|ar|aria|aram|ando)", 2.5),
    ("custo", r"gast(?:ei|ou|amos|aram|o|os|ar|ando|aria)", 2.5),
    ("custo", r"pag(?:ar|uei|ou|amos|o|aria|ando|aremos|ariamos|ei)", 3), ("custo", r"reais|dinheiro|grana", 3),
    ("custo", r"car[oa]|barat[oa]|salgad[oa]", 2), ("custo", r"valor|preco|tarifas?|tarifaria", 1),
    ("custo", r"quanto (?:\w+ )?(?:custou|custa|custaram|paguei|pagou|pagamos|gastei|gastou|gastamos|deu|saiu|ficou)",
     1.5),
    ("previsao", r"previs\w*|estimativas?|estimad[oa]|projecao|projetad[oa]|previst[oa]", 3.5),
    ("previsao", r"(?:vai|vao|vou|vamos|deve|devo|devemos|irei|iremos|sera) (?:\w+ )?(?:dar|ficar|vir|custar|sair"
                 r"|gastar|consumir|ser|pagar|chegar|fechar|bater)"
                 r"|gastarei|consumirei|pagarei|pagaremos|gastaremos", 3),
    ("tarifa_branca", r"tarifa branca", 5), ("tarifa_branca", r"branca", 3), ("tarifa_branca", r"convencional", 2),
    ("tarifa_branca", r"modalidade(?: tarifaria)?", 3), ("tarifa_branca", r"compensa\w*|vale\w* a pena", 1.5),
    ("tarifa_branca", r"(?:mudar|trocar|mudasse|trocasse) (?:\w+ ){0,2}(?:tarifa|modalidade|plano)", 2),
    ("tarifa_branca", r"economizaria|economia|simulacao|simular|comparar|compara", 1.5),
    ("bandeira", r"bandeiras?", 6), ("bandeira", r"vermelha|amarela|verde|cor", 1), ("bandeira", r"patamar", 1),
    ("demanda", r"demandas?", 3.5), ("demanda", r"picos?", 3.5), ("demanda", r"\bkw\b", 2.5),
    ("demanda", r"(?:potencia|carga) (?:maxima|de pico)|(?:maior|maxima) potencia|potencia", 3.5),
    ("demanda", r"(?:hora|horario|momento) (?:\w+ ){0,2}(?:maior|mais) consumo"
                r"|(?:em )?que horas? (?:\w+ ){0,2}(?:mais|maior)", 4.5),
    ("demanda", r"maxim[oa]", 1),
    ("alertas", r"alert\w*", 4.5), ("alertas", r"avisos?", 3.5), ("alertas", r"problemas?|errad[oa]s?|falhas?", 2.5),
    ("alertas", r"anormal|anomalias?|estranh[oa]", 3), ("alertas", r"consumo anormal", 3),
    ("alertas", r"tensao|voltagem", 3), ("alertas", r"fator de potencia", 5),
    ("alertas", r"queda|sobretensao|subtensao|oscila\w*", 1.5),
    ("medidores", r"medidor(?:es)?", 3.5), ("medidores", r"dispositivos?|sensor(?:es)?|aparelhos? de medicao", 3),
    ("medidores", r"online|offline|funcionando|conectad[oa]s?|comunicando|comunicacao|desligad[oa]s?|ligad[oa]s?"
                  r"|status|sinal|funcionam", 2),
    ("medidores", r"configurad[oa]s?|instalad[oa]s?|cadastrad[oa]s?|tenho|temos", 0.5),
    ("relatorio", r"relatorios?", 4.5), ("relatorio", r"resumo", 4), ("relatorio", r"planilha|csv|excel|extrato", 3.5),
    ("relatorio", r"manda|envia|gera|baixar", 0.5),
    ("geracao", r"geracao|gerando|gerou|gerad[oa]s?|geraram|gerar|gera|producao|produzindo|produziu|produzid[oa]"
                r"|produzem|produz", 3),
    ("geracao", r"matriz|mix", 3), ("geracao", r"usinas?|fontes?", 1.5),
    ("carga", r"carga", 4),
    ("cmo", r"cmo", 5), ("cmo", r"custo marginal(?: de operacao)?", 6), ("cmo", r"marginal", 3),
    ("renovavel", r"renovave(?:l|is)", 5), ("renovavel", r"(?:energia|fontes?) limpas?|limpa|energia verde", 3),
    ("renovavel", r"participacao|percentual|porcentagem|porcento|fracao|parcela", 1.5),
]
_CUES: Final = [(intent, re.compile(r"\b(?:" + p + r")\b"), w) for intent, p, w in CUES]
PRIORITY: Final[tuple[Intencao, ...]] = (
    "cmo", "renovavel", "tarifa_branca", "bandeira", "alertas", "previsao", "relatorio", "demanda", "custo",
    "consumo", "medidores", "carga", "geracao")

_KNOWLEDGE: Final = re.compile(
    r"\b(?:(?:me )?expli(?:ca|que|car)(?: (?:para )?mim)?(?: o que (?:e|sao|significa))?"
    r"|o que (?:e|sao|significa|significam|quer dizer|querem dizer)|que (?:e|sao|significa) (?=\w)"
    r"|como (?:funciona|funcionam|e calculad[oa]|sao calculad[oa]s|se calcula|calcula|e cobrad[oa]|e feit[oa])"
    r"|por que|qual (?:e )?a diferenca entre|diferenca entre|para que serve|significado d[eoa]s?)\b")
_ARTICLES: Final = {"o", "a", "os", "as", "um", "uma", "de", "do", "da"}

_FUTURE: Final = re.compile(r"\b(?:vai|vao|vou|vamos|irei|iremos|sera|previs\w*|proxim\w*|que vem|amanha|estimativa"
                            r"|projecao|deve|gastarei|consumirei|pagarei|previst[oa])\b")
_MONEY: Final = re.compile(r"\b(?:conta|contas|reais|pag\w*|cust\w*|gast\w*|dinheiro|fatura|valor)\b")
_PRICE: Final = re.compile(r"\b(?:preco|valor|quanto (?:custa|esta|e)|tarifa)(?: \w+){0,2} (?:o |do |de |por |cada )?"
                           r"kwh\b")
_CYCLE: Final = re.compile(r"\b(?:ultima (?:conta|fatura)|(?:conta|fatura) (?:passada|anterior))\b")
_POSSESSIVE: Final = re.compile(r"\b(?:meu|minha|meus|minhas|eu|nosso|nossa|nossos|nossas|comigo|gerei)\b")

_GRANULARITY: Final[list[tuple[Granularity, re.Pattern[str]]]] = [
    ("15min", re.compile(r"\b(?:(?:por|a cada|cada|de) 15 (?:minutos|min)|de 15 em 15 minutos|quarto de hora)\b")),
    ("hour", re.compile(r"\b(?:(?:por|a cada|cada) hora|hora a hora|de hora em hora|horaria)\b")),
    ("day", re.compile(r"\b(?:(?:por|a cada|cada) dia|dia a dia|diari[oa]s?|diariamente|qual dia|que dia)\b")),
    ("week", re.compile(r"\b(?:(?:por|a cada|cada) semana|semana a semana|semana[il]s?|semanalmente)\b")),
    ("month", re.compile(r"\b(?:(?:por|a cada|cada) mes|mes a mes|mensa(?:l|is)|mensalmente)\b")),
]
_SOURCES: Final[list[tuple[Fonte, re.Pattern[str]]]] = [
    ("hidraulica", re.compile(r"\b(?:hidreletric\w*|hidroeletric\w*|hidraulic\w*|hidricas?|hidro)\b")),
    ("termica", re.compile(r"\b(?:termic\w*|termeletric\w*|termoeletric\w*)\b")),
    ("eolica", re.compile(r"\b(?:eolic\w*|ventos?)\b")),
    ("solar", re.compile(r"\b(?:solar(?:es)?|fotovoltaic\w*|sol)\b")),
]
_REGIONS: Final[dict[str, Subsistema]] = {
    **STATES,
    "sudeste centro oeste": "SE", "sudeste": "SE", "centro oeste": "SE", "sul": "S", "nordeste": "NE",
    "norte": "N", "sin": "SIN", "sistema interligado nacional": "SIN", "sistema interligado": "SIN",
    "brasil": "SIN", "pais": "SIN", "nacional": "SIN", "sistema": "SIN",
}
_REGION_RE: Final = re.compile(r"\b(?:(?:n[oa]|d[oa]|em|para) )?(?:(?:regiao|subsistema) )?(?:(?:d[oa]|n[oa]) )?("
                               + "|".join(sorted(_REGIONS, key=len, reverse=True)) + r")\b")
_GRID_WORDS: Final = re.compile(r"\b(?:ons|rede|regiao|regioes|subsistemas?|interligado|grid)\b")

TARGETS: Final = frozenset(words("""
consumo consumi consumiu consumimos consumindo consumido previsao previsto estimativa projecao bandeira bandeiras
tarifa tarifaria branca convencional modalidade demanda maxima potencia alertas alerta avisos problema anormal
anomalia tensao medidor medidores dispositivos relatorio resumo planilha geracao gerando produzindo eolica solar
hidreletrica termica renovavel renovaveis participacao percentual carga marginal operacao fatura quanto quantos
ontem anteontem semana passada passado ultimos ultimas ultima ultimo proximos proxima proximo gastei gastou gastamos
custo custou paguei pagar conta energia sudeste nordeste norte centro oeste sistema subsistema funcionando online
offline comunicando amanha diario diaria mensal semanal quilowatt hidraulica economizaria compensa deste desse
producao consumir
""")) | frozenset(MONTHS) | frozenset(WEEKDAYS)
_WORD_PATTERNS: Final = [p for _, p, _ in _CUES] + [p for _, p in _SOURCES] + [p for _, p in _GRANULARITY]


def _recognized(word: str) -> bool:
    """A word some cue or slot pattern already reads as it is (any inflection): not a typo."""
    return any(p.fullmatch(word) for p in _WORD_PATTERNS)


SPELLER: Final = Speller(TARGETS, NEUTRAL | {"feira", "kwh", "kw", "reais", "porcento"}, _recognized)

EXPLAINED: Final = NEUTRAL | {"site", "grupo", "feira", "energia", "ate", "de", "em"}


def _take(pattern: re.Pattern[str], text: str) -> tuple[re.Match[str] | None, str]:
    m = pattern.search(text)
    if m is None:
        return None, text
    return m, " ".join((text[:m.start()] + " " + text[m.end():]).split())


def _knowledge(text: str) -> str | None:
    m = _KNOWLEDGE.search(text)
    if m is None:
        return None
    words = text[m.end():].split()
    while words and words[0] in _ARTICLES:
        words.pop(0)
    return " ".join(words) or None


class _Slots(NamedTuple):
    periodo: Periodo | None
    granularidade: Granularity | None
    fonte: Fonte | None
    subsistema: Subsistema | None
    ciclo: Ciclo | None
    future: bool
    """A verb in the future or a period ahead: dates resolve forwards and money questions are forecasts."""


def _first(options: Sequence[tuple[T, re.Pattern[str]]], text: str) -> tuple[T | None, str]:
    for value, pattern in options:
        m, text = _take(pattern, text)
        if m is not None:
            return value, text
    return None, text


def _slots(text: str, now: dt.datetime) -> tuple[_Slots, str]:
    """Period, granularity, source, subsystem and billing cycle, each taken out of the text."""
    future = _FUTURE.search(text) is not None
    periodo, text = find_period(text, now, future=future)
    granularidade, text = _first(_GRANULARITY, text)
    fonte, text = _first(_SOURCES, text)
    m, text = _take(_REGION_RE, text)
    subsistema = _REGIONS[m[1]] if m else None
    m, text = _take(_CYCLE, text)
    if m is not None:
        text = f"{text} conta"
    return _Slots(periodo, granularidade, fonte, subsistema, "anterior" if m else None, future), text


def _score(text: str) -> tuple[dict[Intencao, float], list[str]]:
    """Each intent's cue weights found in ``text``, and the words no cue or neutral list explains."""
    scores: dict[Intencao, float] = {}
    explained = bytearray(len(text))
    for intent, pattern, weight in [*_CUES, (None, _GRID_WORDS, 0.0)]:
        spans = [m.span() for m in pattern.finditer(text)]
        if spans and intent is not None:
            scores[intent] = scores.get(intent, 0.0) + weight
        for a, b in spans:
            explained[a:b] = b"\x01" * (b - a)
    leftover = "".join(" " if explained[i] else ch for i, ch in enumerate(text))
    return scores, [w for w in leftover.split() if w not in EXPLAINED and not w.isdigit()]


def parse(pergunta: str, now: dt.datetime, vocabulario: Vocabulario | None = None) -> Interpretation:
    """Understand ``pergunta`` as asked at ``now`` (aware) about the sites in ``vocabulario``."""
    vocab = vocabulario or Vocabulario()
    today = now.astimezone(TZ)
    normalizada = " ".join(SPELLER.correct(tokens(pergunta), names(vocab)))
    escopo, text = find_scope(normalizada, vocab)
    base = Interpretation(pergunta=pergunta, intencao="desconhecido", confianca=0.0, normalizada=normalizada,
                          escopo=escopo)
    termo = _knowledge(text)
    if termo is not None:
        return msgspec.structs.replace(base, intencao="conhecimento", confianca=1.0, termo=termo)

    slots, text = _slots(text, today)
    scores, unknown = _score(text)
    if slots.fonte and "renovavel" not in scores:
        scores["geracao"] = scores.get("geracao", 0.0) + 2
    if slots.periodo is not None and slots.periodo.inicio > today.date():
        scores["previsao"] = scores.get("previsao", 0.0) + 2
    usuario = _POSSESSIVE.search(text) is not None or escopo != Escopo()
    best = _decide(scores, slots, escopo, usuario, text)
    score = max(scores.values(), default=0.0)
    if best is None or score < MIN_SCORE or unknown:
        return msgspec.structs.replace(base, palavras_desconhecidas=unknown)
    rivals = sorted(scores.values())[:-1]
    confianca = min(1.0, score / 4) * (0.75 if rivals and rivals[-1] >= score - 0.5 else 1.0)

    periodo = slots.periodo
    if periodo is not None:
        if best not in INTENCOES_DA_REDE and periodo.tipo == "agora":
            periodo = None
        elif best != "previsao":
            periodo = clamp(periodo, today.date())
    unidade = UNIDADE_PADRAO[best]
    if best == "previsao" and _MONEY.search(normalizada):
        unidade = "R$"
    elif best == "custo" and _PRICE.search(text):
        unidade = "R$/kWh"
    grid = best in INTENCOES_DA_REDE
    return msgspec.structs.replace(
        base, intencao=best, confianca=round(confianca, 2), periodo=periodo, granularidade=slots.granularidade,
        escopo=msgspec.structs.replace(escopo, usuario=usuario and best == "renovavel"), unidade=unidade,
        fonte=slots.fonte if grid else None, subsistema=slots.subsistema if grid else None,
        ciclo=slots.ciclo if best == "custo" else None)


def _decide(scores: dict[Intencao, float], slots: _Slots, escopo: Escopo, usuario: bool,
            text: str) -> Intencao | None:
    """The best-scoring intent, then the combinations that change its meaning."""
    if not scores:
        return None
    top = max(scores.values())
    best: Intencao | None = next(i for i in PRIORITY if scores.get(i) == top)
    grid = slots.subsistema is not None or _GRID_WORDS.search(text) is not None
    if best in ("consumo", "demanda") and grid and not usuario:
        best = "carga"  # "consumo do Nordeste" is the grid's load
    elif best == "custo" and slots.subsistema is not None:
        best = "cmo"  # "custo da energia no Sul" is the marginal cost
    if best in ("consumo", "custo") and slots.future and "previsao" in scores:
        best = "previsao"  # "quanto vai dar a conta"
    if best == "custo" and (escopo.grupo or escopo.device) and "reais" not in text:
        best = "consumo"  # bills are per site: "quanto a cozinha gastou" asks for kWh
    if best == "geracao" and usuario and slots.subsistema is None:
        best = None  # the user's own generation (solar panels) is not measured
    if best in ("consumo", "custo") and _PRICE.search(text):
        best = "custo"  # "quanto custa o kWh"
    return best
