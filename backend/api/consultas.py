"""``POST /api/v1/consultas/influxql`` (admin): one read-only InfluxQL statement on the backend's database.

A thin layer over :func:`backend.store.readonly.run_console`, which checks the statement
(:mod:`backend.store.console`) and runs it as InfluxDB's READ-only console user with a row cap, a time-range cap
and a timeout. Flux is not served by InfluxDB 1.x: the console speaks InfluxQL only.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from backend.api.access import audited
from backend.api.auth import requires_role
from backend.api.openapi import errors
from backend.errors import BadRequestError
from backend.settings import Settings
from backend.store.readonly import ConsoleResult, run_console

_DB_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InfluxQLIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    consulta: str
    """One SELECT or SHOW statement."""
    db: str | None = None
    """Database (default: the backend's, ``BACKEND_INFLUX_DB``); the console's user may read no other."""


@post("/api/v1/consultas/influxql", guards=[requires_role("admin")], tags=["consultas"], status_code=200,
      responses=errors(504))
async def consulta_influxql(request: Request[Any, Any, Any], settings: NamedDependency[Settings],
                            data: JSONBody[InfluxQLIn]) -> ConsoleResult:
    """Executa uma consulta InfluxQL (um único SELECT ou SHOW), somente leitura.

    Com limite de linhas, de período (dados brutos) e de tempo (504 além dele); 403 quando o InfluxDB recusa a
    consulta ao usuário somente leitura. Flux não é aceito (o InfluxDB 1.x não o oferece)."""
    async with audited(request, "consulta_influxql", target=data.consulta[:200]):
        if data.db is not None and not _DB_RE.fullmatch(data.db):
            raise BadRequestError("'db' deve ter de 1 a 64 letras, dígitos, '_' ou '-'.")
        return await run_console(settings, data.consulta, data.db)
