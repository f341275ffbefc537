"""``POST /api/v1/perguntas``: a question in Portuguese about the user's data or the grid, answered.

A thin layer over :class:`backend.questions.service.QuestionService`: read the body, call the service with the
clock, return its :class:`~backend.questions.service.Resposta`. The service sees the caller's sites only, so a
question can neither name nor reach another tenant's site or meter (backend/api/access.py). The handler registry
is built here, from what this app instance runs: the user's own data always, the knowledge base always, the grid
when the ONS service is up (without it, grid questions get an honest ``disponivel: false``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody

from backend.api.access import visible_analytics
from backend.api.openapi import errors
from backend.api.state import services_of
from backend.questions.grid import GridAnswers
from backend.questions.interpretation import Intencao
from backend.questions.knowledge import conhecimento
from backend.questions.own_data import HANDLERS
from backend.questions.service import Handler, QuestionService, Resposta
from protocol.timebase import TZ


class PerguntaIn(msgspec.Struct, frozen=True):
    pergunta: str
    site: str | None = None
    """The site the question is about; optional when the question names it or only one site is configured."""


class QuestionsController(Controller):
    path = "/api/v1/perguntas"
    tags = ["perguntas"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @post("/", status_code=200, responses=errors(404))
    async def perguntar(self, request: Request[Any, Any, Any], data: JSONBody[PerguntaIn]) -> Resposta:
        """Responde uma pergunta em português sobre os dados do usuário, a rede elétrica ou a conta de luz.

        Consumo, conta, previsão, Tarifa Branca, bandeira, demanda, alertas e medidores; a rede elétrica nacional
        (geração, carga, CMO e participação renovável, dados do ONS); os termos da conta de luz ("o que é …").
        A resposta traz a interpretação e a consulta usadas; 404 para um ``site`` que o usuário não vê."""
        handlers: dict[Intencao, Handler] = {**HANDLERS, "conhecimento": conhecimento}
        ons = services_of(request).ons
        if ons is not None:
            handlers |= GridAnswers(ons.grid).handlers()
        service = QuestionService(await visible_analytics(request), handlers)
        return await service.answer(data.pergunta, data.site, dt.datetime.now(TZ))
