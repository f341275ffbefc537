"""The knowledge base's search: ranking, accents, typos, citations, the docs' sections, rebuilds (no services)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from backend.knowledge import KnowledgeBase, KnowledgeError
from backend.knowledge.sources import ARTICLES_DIR, REPO_DOCS_DIR, load, parse_article

ARTICLES = sorted(ARTICLES_DIR.glob("*.md"))
CITATION = re.compile(r"\b(REN|REH|Lei|PRODIST|ONS|CCEE|Inmetro|STF|ANEEL)\b")


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase(ARTICLES_DIR, REPO_DOCS_DIR, refresh_s=3600)


def first(kb: KnowledgeBase, q: str) -> str:
    results = kb.search(q, 5)
    assert results, f"nothing found for {q!r}"
    return results[0].id


def test_o_que_e_bandeira_vermelha_returns_the_bandeiras_article_first(kb: KnowledgeBase) -> None:
    results = kb.search("o que é bandeira vermelha", 5)
    top = results[0]
    assert top.id == "artigo:bandeiras-tarifarias"
    assert top.title == "Bandeiras tarifárias"
    assert "REN nº 1.000/2021" in top.source and "REH nº 3.306/2024" in top.source
    assert "bandeira" in top.snippet.lower()
    assert top.ref == "backend/knowledge/artigos/bandeiras-tarifarias.md"
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


@pytest.mark.parametrize(("query", "expected"), [
    # as people type: accents or not, upper case, colloquial, plural
    ("O QUE É BANDEIRA VERMELHA?", "bandeiras-tarifarias"),
    ("bandeira vermelha patamar 2", "bandeiras-tarifarias"),
    ("quanto custa a bandeira amarela", "bandeiras-tarifarias"),
    ("tarifa branca vale a pena", "postos-tarifarios-tarifa-branca"),
    ("horario de ponta", "postos-tarifarios-tarifa-branca"),
    ("o que e TUSD", "te-tusd"),
    ("tarifa de energia TE", "te-tusd"),
    ("icms por dentro", "icms-pis-cofins"),
    ("impostos na conta de luz", "icms-pis-cofins"),
    ("custo de disponibilidade", "custo-de-disponibilidade"),
    ("consumo minimo trifasico", "custo-de-disponibilidade"),
    ("tensão precária 127 V", "limites-de-tensao-prodist"),
    ("tensao critica", "limites-de-tensao-prodist"),
    ("subsistemas do SIN", "subsistemas-do-sin"),
    ("o que é o CMO", "custo-marginal-de-operacao"),
    ("PLD", "custo-marginal-de-operacao"),
    ("creditos de energia solar", "micro-e-minigeracao-distribuida"),
    ("o que é Fio B", "micro-e-minigeracao-distribuida"),
    ("fator de potencia baixo", "fator-de-potencia"),
    ("demanda maxima", "demanda"),
    ("diferença entre kw e kwh", "kwh-e-kw"),
    ("ciclo de faturamento", "leitura-e-ciclo-de-faturamento"),
    ("por que minha conta veio tão alta", "por-que-a-conta-mudou"),
    # typos
    ("bandera vermelah", "bandeiras-tarifarias"),
    ("custo de disponibilidadi", "custo-de-disponibilidade"),
    ("tarfa branca", "postos-tarifarios-tarifa-branca"),
    ("subsistma nordesti", "subsistemas-do-sin"),
    ("fator de potensia", "fator-de-potencia"),
])
def test_ranking(kb: KnowledgeBase, query: str, expected: str) -> None:
    assert first(kb, query) == f"artigo:{expected}"


def test_accents_do_not_matter(kb: KnowledgeBase) -> None:
    with_accents = kb.search("tensão crítica e precária", 5)
    without = kb.search("tensao critica e precaria", 5)
    assert [p.id for p in with_accents] == [p.id for p in without]
    assert kb.query_terms("Tensão") == kb.query_terms("tensao") == kb.query_terms("TENSÃO")


def test_typo_is_corrected_to_an_indexed_word_and_nonsense_is_dropped(kb: KnowledgeBase) -> None:
    assert kb.query_terms("bandera") == kb.query_terms("bandeira")
    assert kb.query_terms("rollups") == kb.query_terms("rollup") == ["rollup"]  # a word of the docs only
    assert kb.query_terms("xyzzyq") == []
    assert kb.search("xyzzyq", 5) == []


def test_only_stop_words_find_nothing(kb: KnowledgeBase) -> None:
    assert kb.search("o que é", 5) == []
    assert kb.answer_what_is("o que é") is None


def test_every_article_has_a_title_a_definition_and_a_citation() -> None:
    assert len(ARTICLES) >= 13
    for path in ARTICLES:
        entry = parse_article(path, path.name)
        assert entry.title and entry.aliases
        assert CITATION.search(entry.source), f"{path.name}: the source line cites no regulation: {entry.source!r}"
        assert len(entry.lead) > 80, f"{path.name}: the first paragraph must define the term"
        assert "#" not in entry.lead


def test_every_article_passage_carries_its_citation(kb: KnowledgeBase) -> None:
    for path in ARTICLES:
        entry = parse_article(path, path.name)
        hits = [p for p in kb.search(entry.title, 20) if p.id == entry.id]
        assert hits, f"searching the title of {path.name} does not find it"
        assert hits[0].source == entry.source


def test_docs_sections_are_indexed_with_file_and_section(kb: KnowledgeBase) -> None:
    results = kb.search("InfluxQL bound parameters quoted identifiers", 5)
    docs = [p for p in results if p.kind == "doc"]
    assert docs, results
    p = docs[0]
    assert p.id.startswith("doc:") and "#" in p.ref and p.ref.startswith("docs/")
    assert p.source.startswith("Documentação do CDS, docs/") and "seção" in p.source
    stats = kb.stats()
    assert stats.articles == len(ARTICLES) and stats.doc_sections > 50


def test_a_section_heading_finds_its_section(kb: KnowledgeBase) -> None:
    results = kb.search("Tarifa Branca × Convencional worked example", 10)
    assert any(p.ref.startswith("docs/analytics.md#") for p in results)


def test_without_docs_only_articles_are_indexed(tmp_path: Path) -> None:
    base = KnowledgeBase(ARTICLES_DIR, None)
    assert base.stats().doc_sections == 0
    assert all(p.kind == "artigo" for p in base.search("InfluxQL consumo bandeira", 20))


def test_limit_is_clamped(kb: KnowledgeBase) -> None:
    assert len(kb.search("InfluxDB", 1)) == 1
    assert len(kb.search("InfluxDB", 500)) == 20


def test_answer_what_is_gives_the_definition_with_its_citation(kb: KnowledgeBase) -> None:
    answer = kb.answer_what_is("o que é bandeira vermelha?")
    assert answer is not None
    assert answer.id == "artigo:bandeiras-tarifarias"
    assert answer.snippet.startswith("A bandeira tarifária é um acréscimo mensal")
    assert "REN nº 1.000/2021" in answer.source
    for term, article in [("TUSD", "te-tusd"), ("tarifa branca", "postos-tarifarios-tarifa-branca"),
                          ("CMO", "custo-marginal-de-operacao"), ("custo de disponibilidade",
                                                                  "custo-de-disponibilidade"),
                          ("subsistema", "subsistemas-do-sin"), ("SCEE", "micro-e-minigeracao-distribuida"),
                          ("o que significa kWh", "kwh-e-kw"), ("fator de potência", "fator-de-potencia")]:
        got = kb.answer_what_is(term)
        assert got is not None and got.id == f"artigo:{article}", (term, got)


@pytest.mark.parametrize("term", ["pizza", "o que é o rollup", "o que é a vida", "quem ganhou o jogo", ""])
def test_answer_what_is_declines_what_no_article_is_about(kb: KnowledgeBase, term: str) -> None:
    assert kb.answer_what_is(term) is None


def test_index_is_rebuilt_when_an_article_is_added_or_changed(tmp_path: Path) -> None:
    articles = tmp_path / "artigos"
    shutil.copytree(ARTICLES_DIR, articles)
    now = [0.0]
    base = KnowledgeBase(articles, None, refresh_s=5, clock=lambda: now[0])
    assert base.search("tarifa social baixa renda desconto", 3) == [] or \
        base.search("tarifa social baixa renda desconto", 3)[0].id != "artigo:tarifa-social"
    (articles / "tarifa-social.md").write_text(
        "---\ntitulo: Tarifa Social de Energia Elétrica\ntermos: tarifa social, baixa renda, desconto social\n"
        "fonte: Lei nº 12.212/2010\n---\n# Tarifa Social de Energia Elétrica\n\n"
        "Desconto na tarifa para famílias de baixa renda inscritas no Cadastro Único, conforme a lei.\n",
        encoding="utf-8")
    assert all(p.id != "artigo:tarifa-social" for p in base.search("tarifa social", 3))  # not yet: within refresh
    now[0] = 10.0
    assert base.search("tarifa social", 3)[0].id == "artigo:tarifa-social"
    built = base.stats().built_at
    now[0] = 20.0
    assert base.stats().built_at == built  # nothing changed: no rebuild
    (articles / "tarifa-social.md").unlink()
    now[0] = 30.0
    assert all(p.id != "artigo:tarifa-social" for p in base.search("tarifa social", 3))


def test_a_broken_article_fails_the_first_build_and_keeps_the_last_good_index(tmp_path: Path) -> None:
    articles = tmp_path / "artigos"
    shutil.copytree(ARTICLES_DIR, articles)
    (articles / "quebrado.md").write_text("# Sem cabeçalho\n\ntexto\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"quebrado\.md"):
        KnowledgeBase(articles, None).search("bandeira", 1)
    (articles / "quebrado.md").unlink()
    now = [0.0]
    base = KnowledgeBase(articles, None, refresh_s=1, clock=lambda: now[0])
    assert base.search("bandeira vermelha", 1)
    (articles / "quebrado.md").write_text("---\ntitulo: x\n---\n", encoding="utf-8")
    now[0] = 5.0
    assert base.search("bandeira vermelha", 1)[0].id == "artigo:bandeiras-tarifarias"


@pytest.mark.parametrize("header", [
    "titulo: X\ntermos: y\n",                  # no fonte
    "titulo: X\nfonte: Lei\n",                 # no termos
    "titulo X\ntermos: y\nfonte: Lei\n",       # not key: value
])
def test_article_header_is_checked(tmp_path: Path, header: str) -> None:
    path = tmp_path / "a.md"
    path.write_text(f"---\n{header}---\n# X\n\nTexto.\n", encoding="utf-8")
    with pytest.raises(KnowledgeError):
        parse_article(path, "a.md")


def test_docs_headings_inside_code_blocks_are_not_sections(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "x.md").write_text("# Título\n\nIntro.\n\n## Parte\n\n```\n# não é seção\n```\n\nTexto da parte.\n\n"
                               "#### Detalhe\n\nMais texto.\n", encoding="utf-8")
    entries = [e for e in load(tmp_path / "no-articles", docs)]
    assert [e.title for e in entries] == ["Título", "Título — Parte"]
    assert entries[1].ref.endswith("x.md#parte")
    assert "não é seção" in entries[1].body and "Detalhe" in entries[1].headings
