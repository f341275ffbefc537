"""``GET /api/v1/exportacao``: a site's readings or rollups over a period as a streamed CSV or Parquet download.

Thin: the parameters and the tenancy rule (a hidden site or meter is a 404, backend/api/access.py) are checked
before the first byte, so every refusal is a normal JSON error; then backend/analytics/export.py produces the file
window by window into a Litestar ``Stream``. A failure of InfluxDB after the headers are sent can only cut the
download short (the Parquet file then lacks its footer and is refused by every reader: never silently partial).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Stream

from backend.analytics.export import MEDIA_TYPES, STREAMS, Format, Level, record_batches
from backend.analytics.service import local_range
from backend.api.access import hidden_device, require_site, sees_device
from backend.api.auth import caller_of
from backend.api.devices import check_device
from backend.api.openapi import also_as, choice, errors, local_day
from backend.api.state import Services
from backend.errors import BadRequestError
from backend.settings import Settings
from backend.store.influx import InfluxClient

LEVELS: Final = ("raw", "1m", "1h")
FORMATS: Final = ("csv", "csv-br", "parquet")
_EXTENSIONS: Final = {"csv": "csv", "csv-br": "csv", "parquet": "parquet"}


class ExportController(Controller):
    path = "/api/v1/exportacao"
    tags = ["exportação"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("", responses=errors(422), opt=also_as("text/csv", "application/vnd.apache.parquet"))
    async def exportacao(
        self,
        request: Request[Any, Any, Any],
        influx: NamedDependency[InfluxClient],
        settings: NamedDependency[Settings],
        services: NamedDependency[Services],
        site: FromQuery[str],
        device: FromQuery[str | None] = None,
        inicio: Annotated[str | None, local_day("Primeiro dia (AAAA-MM-DD, horário de Brasília).")] = None,
        fim: Annotated[str | None, local_day("Último dia, inclusive (AAAA-MM-DD); padrão: hoje.")] = None,
        nivel: Annotated[str, choice(LEVELS, "raw (medições brutas), 1m ou 1h (agregados).")] = "1h",
        formato: Annotated[str, choice(FORMATS, "csv (máquina: ',' e ponto decimal, UTC), csv-br (planilha: "
                                                "';', vírgula decimal, BOM, horário de Brasília) ou parquet.")]
        = "parquet",
    ) -> Stream:
        """Medições brutas ou agregadas (1 min, 1 h) de um site ou de um medidor dele num período, em CSV ou Parquet.

        O arquivo é gerado e enviado aos poucos (janelas de tempo), qualquer que seja o período (até 400 dias).
        Colunas: time, site, gateway, device, os campos do nível e consumo_kwh (degrau do registrador de energia
        desde a linha anterior do mesmo medidor; vazio num reinício). 404 para um site ou medidor que não existe
        ou que o usuário não pode ver.
        """
        if nivel not in LEVELS or formato not in FORMATS:
            raise BadRequestError(f"'nivel' deve ser um de {', '.join(LEVELS)}; 'formato' um de {', '.join(FORMATS)}.")
        caller = await caller_of(request)
        require_site(caller, site)
        if device is not None:
            check_device(device)
            # The meter's own site (sites file, device book), not the one asked for: a tenant naming another
            # site's meter under their own site gets the 404 of a meter they cannot see.
            if not sees_device(caller, services, device):
                raise hidden_device(device)
        start, end, a, b = local_range(inicio, fim)
        level: Level = nivel  # type: ignore[assignment]  # checked against LEVELS above
        fmt: Format = formato  # type: ignore[assignment]
        batches = record_batches(influx, settings.influx_db, level, site, device, a, b, settings.export_chunk_rows)
        name = f"cds-{site}-{device or 'site'}-{nivel}-{start.isoformat()}-{end.isoformat()}.{_EXTENSIONS[fmt]}"
        return Stream(STREAMS[fmt](batches, level), media_type=MEDIA_TYPES[fmt],
                      headers={"Content-Disposition": f'attachment; filename="{name}"'})
