"""``PUT /api/v1/medidores/{device}/nome``: an operator of a meter's site gives it a friendly name.

The names live in :mod:`backend.ingest.names`; this controller applies the tenancy rule (a meter of a site the
caller does not see is a 404, one the caller sees but does not operate a 403) and hands the change, audited,
to the store. ``/api/v1/painel/agora`` returns the names, and the dashboard shows them wherever it names a meter.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, put
from litestar.params import FromPath, JSONBody

from backend.api.access import actor_of, device_site, hidden_device, require_operator
from backend.api.auth import caller_of, requires_role
from backend.api.state import influx_of, services_of
from backend.errors import BadRequestError
from backend.ingest.names import MeterName, MeterNames
from protocol import ids


class NomeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    nome: str
    """The friendly name ("Geladeira"); "" takes it back (the dashboard then shows its default)."""


def meter_names(request: Request[Any, Any, Any]) -> MeterNames:
    """This app's copy of the names, made at first use: it needs only the InfluxDB client and the audit log that
    the lifespan already opened, and holds no task to start or stop."""
    state = request.app.state
    names: MeterNames | None = state.get("meter_names")
    if names is None:
        services = services_of(request)
        names = MeterNames(influx_of(request), services.settings, services.authenticator.audit)
        state["meter_names"] = names
    return names


class NamesController(Controller):
    path = "/api/v1/medidores"
    tags = ["medidores"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @put("/{device:str}/nome", guards=[requires_role("operator")])
    async def nome(self, request: Request[Any, Any, Any], device: FromPath[str],
                   data: JSONBody[NomeIn]) -> MeterName:
        """Dá ao medidor um nome amigável ("Geladeira", "Chuveiro"), visto por todos os usuários do site.

        Só um operador do site do medidor (ou um administrador); até 40 caracteres; um nome vazio volta
        ao padrão. A mudança fica no registro de auditoria (ação ``nomear_medidor``)."""
        if not ids.is_device_id(device):
            raise BadRequestError("Identificador de medidor inválido: 16 dígitos hexadecimais minúsculos.")
        services = services_of(request)
        site = device_site(services, device)
        caller = await caller_of(request)
        if not site or not caller.can_see(site):
            raise hidden_device(device)
        require_operator(caller, site)
        return await meter_names(request).rename(site, device, data.nome, actor=await actor_of(request))
