"""Knowledge base: the ANEEL/ONS terms of the bill and the app explained in pt-BR, with citations, plus the docs.

A leaf beside ``backend.aneel``: it imports nothing of the backend but ``backend.settings`` and
``backend.errors``. The API (``GET /api/v1/conhecimento``) and the questions engine use these:

- :func:`search` ``(q, limit=5) -> list[Passage]``: ranked passages (title, snippet, source = citation, score);
- :func:`answer_what_is` ``(term) -> Passage | None``: the article that defines a term ("bandeira vermelha",
  or the whole question "o que é bandeira vermelha?"), its definition as the snippet, or None when no article
  is clearly about it — never a guess;
- :func:`base_for` ``(settings)``: the process-wide :class:`KnowledgeBase` for those settings (the two
  functions above use the one for :func:`backend.settings.get_settings`).

How the index works and how to add an article: docs/conhecimento.md.
"""

from __future__ import annotations

import threading
from pathlib import Path

from backend.knowledge.index import MAX_LIMIT, MAX_QUERY_CHARS, IndexStats, KnowledgeBase, Passage, validate_query
from backend.knowledge.sources import ARTICLES_DIR, REPO_DOCS_DIR, KnowledgeError
from backend.settings import Settings, get_settings

_bases: dict[tuple[str, float], KnowledgeBase] = {}
_lock = threading.Lock()


def base_for(settings: Settings) -> KnowledgeBase:
    """The shared knowledge base for ``settings`` (``knowledge_docs_dir``, ``knowledge_refresh_s``)."""
    key = (settings.knowledge_docs_dir, settings.knowledge_refresh_s)
    with _lock:
        base = _bases.get(key)
        if base is None:
            docs = Path(settings.knowledge_docs_dir) if settings.knowledge_docs_dir else REPO_DOCS_DIR
            base = _bases[key] = KnowledgeBase(ARTICLES_DIR, docs if docs.is_dir() else None,
                                               refresh_s=settings.knowledge_refresh_s)
        return base


def search(q: str, limit: int = 5) -> list[Passage]:
    """The ``limit`` best passages for ``q`` (see :meth:`KnowledgeBase.search`)."""
    return base_for(get_settings()).search(q, limit)


def answer_what_is(term: str) -> Passage | None:
    """The defining article for ``term`` with its citation, or None (see :meth:`KnowledgeBase.answer_what_is`)."""
    return base_for(get_settings()).answer_what_is(term)


__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "IndexStats",
    "KnowledgeBase",
    "KnowledgeError",
    "Passage",
    "answer_what_is",
    "base_for",
    "search",
    "validate_query",
]
