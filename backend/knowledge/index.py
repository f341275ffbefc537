"""The knowledge base's search index: SQLite FTS5 with bm25 ranking over Portuguese stems, in memory.

Why in memory and not a file under a state path: the corpus is small (about fifteen articles and a hundred doc
sections, well under a megabyte) and builds in a fraction of a second, and backend replicas keep no state of
their own (docs/architecture.md) — a file would be one more thing to place, lock between replicas and clean
up, for a saving of one build per process. The index is built on first use and rebuilt when a source changes:
at most every ``refresh_s`` seconds a search compares the files' names, sizes and modification times with
those it was built from.

Layout: one FTS5 row per :class:`~backend.knowledge.sources.Entry` with three columns holding *stems*, not
words (``text.terms``): the title, the other names of the term (or the headings above a doc section) and the
body. SQLite's Python binding cannot register a custom tokenizer, so the stemming happens here and FTS5's
``unicode61`` tokenizer only splits the stems on spaces. A query is its stems joined with ``OR``; ``bm25()``
weights a hit in the title 8×, in the aliases 5×, in the body 1× (so the article *about* a term outranks every
text that merely mentions it), and an article's score is multiplied by :data:`ARTICLE_BOOST` over a doc
section (articles are written for the people who ask; docs for developers).

The snippet is the one or two consecutive sentences of the passage holding the most distinct query stems,
cut to about :data:`SNIPPET_CHARS` characters; an article found only by its title or aliases shows its
definition (first paragraph).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from backend.errors import BadRequestError
from backend.knowledge import text
from backend.knowledge.sources import ARTICLES_DIR, Entry, Kind, KnowledgeError, load, source_files

log = logging.getLogger(__name__)

MAX_QUERY_CHARS: Final = 200
MAX_LIMIT: Final = 20
WEIGHTS: Final = (8.0, 5.0, 1.0)
"""bm25 column weights: title, aliases, body."""
ARTICLE_BOOST: Final = 1.5
SNIPPET_CHARS: Final = 400
_SENTENCE_RE: Final = re.compile(r"(?<=[.!?;])\s+(?=[A-ZÀ-Ú0-9“\"(])|\n\n")


class Passage(msgspec.Struct, frozen=True):
    """One ranked search result: where it is, what it says, and where that comes from."""

    id: str
    """``artigo:<nome>`` or ``doc:<arquivo>#<âncora>``."""
    kind: Kind
    """``artigo`` (a term explained in pt-BR, citing its regulation) or ``doc`` (a section of docs/)."""
    title: str
    snippet: str
    """The sentences that answer, or the article's definition."""
    source: str
    """The citation: regulation or document (articles), file and section (docs)."""
    ref: str
    """Path in the repo (``backend/knowledge/artigos/x.md``, ``docs/x.md#anchor``)."""
    score: float
    """bm25 relevance (higher is better; comparable only within one search)."""


class IndexStats(msgspec.Struct, frozen=True):
    entries: int
    articles: int
    doc_sections: int
    words: int
    build_ms: float
    built_at: float
    """Unix time of the build."""


def validate_query(q: str | None) -> str:
    """The query stripped; BadRequestError (pt-BR) when it is empty or too long."""
    q = (q or "").strip()
    if not q:
        raise BadRequestError("Informe o que procurar no parâmetro q (por exemplo: q=bandeira vermelha).")
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequestError(f"A busca aceita no máximo {MAX_QUERY_CHARS} caracteres; a enviada tem {len(q)}.")
    return q


class _Prepared(msgspec.Struct, frozen=True):
    entry: Entry
    sentences: list[str]
    sentence_terms: list[frozenset[str]]
    head_terms: frozenset[str]
    """Stems of the title and aliases."""
    all_terms: frozenset[str]


def _sentences(body: str) -> list[str]:
    return [" ".join(s.split()) for s in _SENTENCE_RE.split(body) if s.strip()]


class _Index:
    """One immutable build: the FTS5 table, the prepared entries (row id - 1), the vocabulary."""

    def __init__(self, entries: list[Entry], fingerprint: tuple[tuple[str, int, int], ...]) -> None:
        t0 = time.perf_counter()
        self.fingerprint = fingerprint
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE VIRTUAL TABLE fts USING fts5(title, aliases, body, "
                        "tokenize = 'unicode61 remove_diacritics 0')")
        self.prepared: list[_Prepared] = []
        reference_words: list[str] = []
        other_words: list[str] = []
        rows = []
        for e in entries:
            sentences = _sentences(e.body)
            head = frozenset(text.terms(e.title) + text.terms(e.aliases))
            sentence_terms = [frozenset(text.terms(s)) for s in sentences]
            body_terms = text.terms(e.body) + text.terms(e.headings)
            self.prepared.append(_Prepared(entry=e, sentences=sentences, sentence_terms=sentence_terms,
                                           head_terms=head, all_terms=head | frozenset(body_terms)))
            (reference_words if e.kind == "artigo" else other_words).extend(
                text.words(f"{e.title} {e.aliases} {e.headings} {e.body}"))
            rows.append((len(self.prepared), " ".join(text.terms(e.title)), " ".join(text.terms(e.aliases)),
                         " ".join(body_terms)))
        self.db.executemany("INSERT INTO fts(rowid, title, aliases, body) VALUES (?, ?, ?, ?)", rows)
        self.db.commit()
        self.vocabulary = text.Vocabulary(reference_words, other_words)
        self.lock = threading.Lock()
        articles = sum(1 for e in entries if e.kind == "artigo")
        self.stats = IndexStats(entries=len(entries), articles=articles, doc_sections=len(entries) - articles,
                                words=len(self.vocabulary), build_ms=round((time.perf_counter() - t0) * 1000, 1),
                                built_at=time.time())

    def ranked(self, terms: list[str], kind: Kind | None = None) -> list[tuple[_Prepared, float]]:
        """Every entry matching any of ``terms``, best first, with its (boosted) bm25 score."""
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        with self.lock:
            rows = self.db.execute(f"SELECT rowid, bm25(fts, {WEIGHTS[0]}, {WEIGHTS[1]}, {WEIGHTS[2]}) FROM fts "
                                   "WHERE fts MATCH ?", (match,)).fetchall()
        out: list[tuple[_Prepared, float]] = []
        for rowid, rank in rows:
            p = self.prepared[rowid - 1]
            if kind is None or p.entry.kind == kind:
                out.append((p, -rank * (ARTICLE_BOOST if p.entry.kind == "artigo" else 1.0)))
        out.sort(key=lambda item: (-item[1], item[0].entry.id))
        return out


def snippet(p: _Prepared, terms: list[str]) -> str:
    """The window of one or two consecutive sentences with the most distinct query stems (preferring one that
    starts with a hit, then the earliest), keeping the second sentence only when it adds stems or the first is
    short; the article's definition when no sentence has any. Table rows count as sentences."""
    wanted = frozenset(terms)
    st = p.sentence_terms
    windows = [(len((st[i] | (st[i + 1] if i + 1 < len(st) else frozenset())) & wanted), len(st[i] & wanted))
               for i in range(len(st))]
    if not windows or max(windows)[0] == 0:
        return _cut(p.entry.lead or (p.sentences[0] if p.sentences else ""))
    i = windows.index(max(windows))
    chosen = p.sentences[i]
    if i + 1 < len(p.sentences) and ((st[i + 1] & wanted) - st[i] or len(chosen) < SNIPPET_CHARS // 3):
        chosen = f"{chosen} {p.sentences[i + 1]}"
    return _cut(chosen)


def _cut(s: str) -> str:
    if len(s) <= SNIPPET_CHARS:
        return s
    cut = s[:SNIPPET_CHARS].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " …"


class KnowledgeBase:
    """Search over the articles and the docs. Thread-safe; the index is built on first use (see module doc)."""

    def __init__(self, articles_dir: Path = ARTICLES_DIR, docs_dir: Path | None = None, *, refresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.articles_dir = articles_dir
        self.docs_dir = docs_dir
        self.refresh_s = refresh_s
        self._clock = clock
        self._index: _Index | None = None
        self._checked = -math.inf
        self._build_lock = threading.Lock()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in source_files(self.articles_dir, self.docs_dir):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _current(self) -> _Index:
        index = self._index
        now = self._clock()
        if index is not None and now - self._checked < self.refresh_s:
            return index
        with self._build_lock:
            index = self._index
            if index is not None and self._clock() - self._checked < self.refresh_s:
                return index
            fingerprint = self._fingerprint()
            self._checked = self._clock()
            if index is not None and index.fingerprint == fingerprint:
                return index
            try:
                new = _Index(list(load(self.articles_dir, self.docs_dir)), fingerprint)
            except KnowledgeError:
                if index is None:
                    raise
                log.exception("knowledge base: rebuild failed, still serving the previous index")
                return index
            log.info("knowledge base indexed", extra={"entries": new.stats.entries, "build_ms": new.stats.build_ms})
            self._index = new
            return new

    def stats(self) -> IndexStats:
        """Size and build time of the current index (builds it if needed)."""
        return self._current().stats

    def query_terms(self, q: str) -> list[str]:
        """The stems a search for ``q`` looks for (typos corrected, unknown words and stop words dropped)."""
        return self._current().vocabulary.query_terms(q)

    def search(self, q: str, limit: int = 5) -> list[Passage]:
        """The ``limit`` (1..20) passages that best match ``q``, best first; [] when nothing matches."""
        index = self._current()
        terms = index.vocabulary.query_terms(q)
        limit = max(1, min(MAX_LIMIT, limit))
        return [Passage(id=p.entry.id, kind=p.entry.kind, title=p.entry.title, snippet=snippet(p, terms),
                        source=p.entry.source, ref=p.entry.ref, score=round(score, 3))
                for p, score in index.ranked(terms)[:limit]]

    def answer_what_is(self, term: str) -> Passage | None:
        """The article that defines ``term`` (or a whole question, "o que é bandeira vermelha?"), with its
        definition as the snippet and its citation; None unless the best article is clearly about it: every
        stem of the question occurs in the article and at least one in its title or other names (the first of the
        three best-ranked articles that passes)."""
        index = self._current()
        terms = index.vocabulary.query_terms(term)
        if not terms:
            return None
        for p, score in index.ranked(terms, kind="artigo")[:3]:
            if set(terms) <= p.all_terms and p.head_terms & set(terms):
                return Passage(id=p.entry.id, kind=p.entry.kind, title=p.entry.title, snippet=p.entry.lead,
                               source=p.entry.source, ref=p.entry.ref, score=round(score, 3))
        return None
