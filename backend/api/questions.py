"""``POST /api/v1/perguntas``: a question in Portuguese about the user's data or the grid, answered.

A thin layer over :class:`backend.questions.service.QuestionService`: read the body, call the service with the
clock, return its :class:`~backend.questions.service.Resposta`. The handlers of the user's own data are
registered here; the grid's and the knowledge base's join them when those services are plugged in.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import JSONBody

from backend.api.state import analytics_service
from backend.questions.own_data import HANDLERS
from backend.questions.service import QuestionService, Resposta
from protocol.timebase import TZ


class PerguntaIn(msgspec.Struct, frozen=True):
    pergunta: str
    site: str | None = None
    """The site the question is about; optional when the question names it or only one site is configured."""


class QuestionsController(Controller):
    path = "/api/v1/perguntas"
    tags = ["perguntas"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @post("/", status_code=200)
    async def perguntar(self, request: Request[Any, Any, Any], data: JSONBody[PerguntaIn]) -> Resposta:
        """Responde perguntas em português sobre consumo, conta, previsão, Tarifa Branca, bandeira, demanda,
        alertas e medidores (e, quando disponíveis, sobre a rede elétrica nacional), com a interpretação e a
        consulta usadas."""
        service = QuestionService(analytics_service(request), HANDLERS)
        return await service.answer(data.pergunta, data.site, dt.datetime.now(TZ))
