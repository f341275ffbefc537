"""Answers to "o que é …", "por que minha conta …", "como funciona …" from the knowledge base, with the citation.

The parser leaves the subject of such a question in ``termo`` ("bandeira tarifaria"). The answer is the article
that :meth:`~backend.knowledge.KnowledgeBase.answer_what_is` finds *about* that subject — its definition, quoted,
and the regulation or document it comes from (``citacoes`` and the sentence's "Fonte: …"). When no article is
clearly about it, the answer says so (``disponivel=False``) and only points at the articles that mention the
words, labelled as such: a related passage is never presented as the answer.

The base is the one the app's ``GET /api/v1/conhecimento`` searches (:func:`backend.knowledge.base_for` with the
app's settings), so ``consulta`` finds the same article. The first search of a process builds the index (about
0.2 s), so both calls run in a worker thread, off the event loop the MQTT ingest shares.
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import urlencode

from backend.knowledge import MAX_QUERY_CHARS, Passage, base_for
from backend.questions.interpretation import Interpretation
from backend.questions.service import Citacao, Contexto, Resposta

RELATED: Final = 3
"""How many passages a "não sei" answer points at."""


def _citation(p: Passage) -> Citacao:
    return Citacao(titulo=p.title, fonte=p.source, ref=p.ref)


async def conhecimento(q: Interpretation, ctx: Contexto) -> Resposta:
    """The article that defines ``q.termo`` with its citation, or an honest "não encontrei"."""
    term = (q.termo or q.pergunta)[:MAX_QUERY_CHARS]
    base = base_for(ctx.analytics.settings)
    call = f"GET /api/v1/conhecimento?{urlencode({'q': term})}"
    found = await asyncio.to_thread(base.answer_what_is, term)
    if found is not None:
        text = f"{found.title}: {found.snippet} (Fonte: {found.source.rstrip('.')}.)"
        return Resposta(resposta=text, disponivel=True, interpretacao=q, consulta=call,
                        citacoes=[_citation(found)])
    related = await asyncio.to_thread(base.search, term, RELATED)
    text = f"Não encontrei na base de conhecimento um texto que explique “{term}”."
    articles = [p for p in related if p.kind == "artigo"]
    if articles:
        text += " Artigos que mencionam essas palavras: " + "; ".join(f"“{p.title}”" for p in articles) + "."
    elif related:
        text += " A documentação técnica do CDS menciona essas palavras em: " + \
            "; ".join(f"{p.title} ({p.ref})" for p in related) + "."
    return Resposta(resposta=text, disponivel=False, interpretacao=q, consulta=call,
                    citacoes=[_citation(p) for p in related])
