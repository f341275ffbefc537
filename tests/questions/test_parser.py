"""The question parser: the corpus of questions as people ask them, the period grammar, words and doubt."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.questions.interpretation import Vocabulario
from backend.questions.normalize import tokens
from backend.questions.parser import parse
from backend.questions.periods import find_period
from protocol.timebase import TZ
from tests.questions.corpus import load, mismatches

CORPUS = load()
NOW = CORPUS.agora  # Wednesday 2026-05-20 10:00 in Brasília


def test_corpus_accuracy_is_at_least_95_percent_and_failures_are_listed() -> None:
    failures = []
    for entry in CORPUS.entries:
        diff = mismatches(entry, parse(entry["q"], NOW, CORPUS.vocabulario))
        if diff:
            failures.append(f"{entry['q']!r}: {diff}")
    n = len(CORPUS.entries)
    accuracy = 1 - len(failures) / n
    print(f"\ncorpus: {n - len(failures)}/{n} right ({accuracy:.1%}); failures:\n" + "\n".join(failures))
    assert n >= 200
    assert accuracy >= 0.95, "\n".join(failures)


def test_corpus_covers_every_intent() -> None:
    intents = {e["intencao"] for e in CORPUS.entries}
    assert intents == {"consumo", "custo", "previsao", "tarifa_branca", "bandeira", "demanda", "alertas", "medidores",
                       "relatorio", "geracao", "carga", "cmo", "renovavel", "conhecimento", "desconhecido"}


def period(text: str, now: dt.datetime = NOW, future: bool = False) -> tuple[str, str, str] | None:
    p, _ = find_period(" ".join(tokens(text)), now, future=future)
    return (p.inicio.isoformat(), p.fim.isoformat(), p.tipo) if p else None


@pytest.mark.parametrize(("text", "expected"), [
    ("hoje", ("2026-05-20", "2026-05-20", "dia")),
    ("ontem", ("2026-05-19", "2026-05-19", "dia")),
    ("anteontem", ("2026-05-18", "2026-05-18", "dia")),
    ("semana passada", ("2026-05-11", "2026-05-17", "semana")),
    ("semana retrasada", ("2026-05-04", "2026-05-10", "semana")),
    ("este mês", ("2026-05-01", "2026-05-31", "mes")),
    ("nesse mes", ("2026-05-01", "2026-05-31", "mes")),
    ("mês passado", ("2026-04-01", "2026-04-30", "mes")),
    ("em março", ("2026-03-01", "2026-03-31", "mes")),
    ("em dezembro", ("2025-12-01", "2025-12-31", "mes")),
    ("em maio", ("2026-05-01", "2026-05-31", "mes")),
    ("abril do ano passado", ("2025-04-01", "2025-04-30", "mes")),
    ("fevereiro de 2024", ("2024-02-01", "2024-02-29", "mes")),
    ("nos últimos 7 dias", ("2026-05-14", "2026-05-20", "ultimos")),
    ("nos ultimos sete dias", ("2026-05-14", "2026-05-20", "ultimos")),
    ("últimos 3 meses", ("2026-02-21", "2026-05-20", "ultimos")),
    ("de 1 a 15 de maio", ("2026-05-01", "2026-05-15", "intervalo")),
    ("entre 10/04 e 20/04", ("2026-04-10", "2026-04-20", "intervalo")),
    ("de 20/12 a 10/01", ("2025-12-20", "2026-01-10", "intervalo")),
    ("de 28 de dezembro a 3 de janeiro", ("2025-12-28", "2026-01-03", "intervalo")),
    ("do dia 5 ao dia 12", ("2026-05-05", "2026-05-12", "intervalo")),
    ("desde março", ("2026-03-01", "2026-05-20", "intervalo")),
    ("de 01/05 até hoje", ("2026-05-01", "2026-05-20", "intervalo")),
    ("dia 25", ("2026-04-25", "2026-04-25", "dia")),  # the 25th of May is still ahead: April's
    ("sexta-feira", ("2026-05-15", "2026-05-15", "dia")),
    ("há 3 dias", ("2026-05-17", "2026-05-17", "dia")),
    ("no fim de semana", ("2026-05-16", "2026-05-17", "intervalo")),
    ("1º de maio", ("2026-05-01", "2026-05-01", "dia")),
    ("2026-04-16", ("2026-04-16", "2026-04-16", "dia")),
    ("amanhã", ("2026-05-21", "2026-05-21", "dia")),
    ("próximos 7 dias", ("2026-05-20", "2026-05-26", "proximos")),
    ("semana que vem", ("2026-05-25", "2026-05-31", "semana")),
    ("mês que vem", ("2026-06-01", "2026-06-30", "mes")),
    ("até o fim do mês", ("2026-05-20", "2026-05-31", "proximos")),
    ("agora", ("2026-05-20", "2026-05-20", "agora")),
    ("de 31 a 5", None),  # not a range
    ("31 de fevereiro", None),
])
def test_relative_periods(text: str, expected: tuple[str, str, str] | None) -> None:
    assert period(text) == expected


def test_future_questions_prefer_dates_ahead() -> None:
    assert period("sexta", future=True) == ("2026-05-22", "2026-05-22", "dia")
    assert period("junho", future=True) == ("2026-06-01", "2026-06-30", "mes")
    assert period("junho") == ("2025-06-01", "2025-06-30", "mes")
    assert period("maio", future=True) == ("2026-05-01", "2026-05-31", "mes")  # the current month either way


def test_year_turn_and_leap_day() -> None:
    jan2 = dt.datetime(2026, 1, 2, 9, tzinfo=TZ)
    assert period("mês passado", jan2) == ("2025-12-01", "2025-12-31", "mes")
    assert period("semana passada", jan2) == ("2025-12-22", "2025-12-28", "semana")
    assert period("em dezembro", jan2) == ("2025-12-01", "2025-12-31", "mes")
    assert period("ontem", dt.datetime(2024, 3, 1, 0, 30, tzinfo=TZ)) == ("2024-02-29", "2024-02-29", "dia")


def test_the_clock_is_read_in_brasilia_time() -> None:
    late_utc = dt.datetime(2026, 5, 21, 2, 0, tzinfo=dt.UTC)  # 23:00 of the 20th in Brasília
    assert parse("quanto consumi hoje", late_utc).periodo.inicio == dt.date(2026, 5, 20)  # type: ignore[union-attr]


def test_words_accents_abbreviations_and_typos() -> None:
    assert tokens("Qto deu a conta em R$ de março?") == ["quanto", "deu", "a", "conta", "em", "reais", "de", "marco"]
    assert tokens("kW/h hj") == ["kwh", "hoje"]
    assert tokens("geração no SE") == ["geracao", "no", "sudeste"]
    assert tokens("SE EU MUDAR") == ["se", "eu", "mudar"]  # capitals everywhere are not subsystem codes
    assert parse("cosumo de onten", NOW).normalizada == "consumo de ontem"
    assert parse("quanto custa um carro", NOW).normalizada == "quanto custa um carro"  # "carro" is not "caro"


def test_a_past_question_ends_today_and_a_forecast_does_not() -> None:
    assert parse("consumo deste mês", NOW).periodo.fim == dt.date(2026, 5, 20)  # type: ignore[union-attr]
    assert parse("previsão de consumo deste mês", NOW).periodo.fim == dt.date(2026, 5, 31)  # type: ignore[union-attr]


def test_low_confidence_falls_to_desconhecido_with_the_words_it_did_not_know() -> None:
    q = parse("qual o consumo da geladeira?", NOW, CORPUS.vocabulario)
    assert q.intencao == "desconhecido" and q.palavras_desconhecidas == ["geladeira"] and q.confianca == 0
    q = parse("qual o consumo da cozinha?", NOW, CORPUS.vocabulario)
    assert q.intencao == "consumo" and q.escopo.grupo == "cozinha" and q.confianca >= 0.5
    assert parse("cozinha", NOW, CORPUS.vocabulario).intencao == "desconhecido"  # a name alone asks nothing


def test_scope_names_without_a_vocabulary_are_unknown_words() -> None:
    assert parse("quanto a cozinha consumiu ontem", NOW, Vocabulario()).intencao == "desconhecido"


def test_parsing_is_deterministic() -> None:
    for entry in CORPUS.entries[::10]:
        assert parse(entry["q"], NOW, CORPUS.vocabulario) == parse(entry["q"], NOW, CORPUS.vocabulario)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_text_parses_without_raising(text: str) -> None:
    q = parse(text, NOW, CORPUS.vocabulario)
    assert 0.0 <= q.confianca <= 1.0
