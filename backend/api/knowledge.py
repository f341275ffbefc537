"""``GET /api/v1/conhecimento``: search the knowledge base (pt-BR articles with citations, and the docs).

A thin layer over :mod:`backend.knowledge`: check ``q`` and ``limite``, search, answer the ranked passages.
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIType
from litestar.params import QueryParameter

from backend.errors import BadRequestError
from backend.knowledge import MAX_LIMIT, MAX_QUERY_CHARS, Passage, base_for, validate_query
from backend.settings import Settings


class KnowledgeOut(msgspec.Struct):
    q: str
    terms: list[str]
    """The stems searched for (stop words dropped, typos corrected): what the ranking saw."""
    passages: list[Passage]
    took_ms: float


# In a worker thread: the first search of a process (and the first after a source changed) builds the index,
# ~0.2 s that must not stall the event loop the MQTT ingest shares.
@get("/api/v1/conhecimento", tags=["conhecimento"], sync_to_thread=True)
def conhecimento(
    settings: NamedDependency[Settings],
    q: Annotated[str | None, QueryParameter(
        description=f"O que procurar, em português (1 a {MAX_QUERY_CHARS} caracteres).",
        schema_extra={"min_length": 1, "max_length": MAX_QUERY_CHARS})] = None,
    # A string checked here, not an int: a bad value gets the pt-BR message below instead of Litestar's.
    limite: Annotated[str, QueryParameter(
        description=f"Quantos trechos, de 1 a {MAX_LIMIT}.",
        schema_extra={"type": OpenAPIType.INTEGER, "minimum": 1, "maximum": MAX_LIMIT, "default": 5})] = "5",
) -> KnowledgeOut:
    """Busca na base de conhecimento: trechos ordenados por relevância (bm25), cada um com título, trecho,
    fonte (a norma ou o documento citado) e pontuação."""
    query = validate_query(q)
    if not re.fullmatch(r"[0-9]{1,3}", limite) or not 1 <= int(limite) <= MAX_LIMIT:
        raise BadRequestError(f"'limite' deve ser um número inteiro de 1 a {MAX_LIMIT}.")
    t0 = time.perf_counter()
    base = base_for(settings)
    passages = base.search(query, int(limite))
    return KnowledgeOut(q=query, terms=base.query_terms(query), passages=passages,
                        took_ms=round((time.perf_counter() - t0) * 1000, 2))
