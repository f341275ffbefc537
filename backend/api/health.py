"""Liveness, readiness and Prometheus metrics: public (no token), for orchestrators and scrapers."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from backend.api.state import Services
from backend.errors import InfluxError


class HealthOut(msgspec.Struct):
    status: str = "ok"


class InfluxCheck(msgspec.Struct, omit_defaults=True):
    ok: bool
    version: str | None = None
    """What InfluxDB's /ping reports (``X-Influxdb-Version``)."""
    error: str | None = None


class MqttCheck(msgspec.Struct, omit_defaults=True):
    ok: bool
    client_id: str
    unacked: int
    """MQTT messages received but not yet acknowledged (their readings are not in InfluxDB yet)."""
    adopted_sessions: list[str]
    """Client ids of absent replicas whose sessions this one took over."""
    error: str | None = None


class Checks(msgspec.Struct, omit_defaults=True):
    influxdb: InfluxCheck
    mqtt: MqttCheck | None = None
    """Absent when this replica does not ingest (``BACKEND_INGEST_ENABLED=false``)."""


class ReadyOut(msgspec.Struct):
    status: str
    """``ready`` (200) or ``not_ready`` (503)."""
    checks: Checks


@get("/health", opt={"public": True}, tags=["health"], sync_to_thread=False)
def health() -> HealthOut:
    """Vivacidade do processo: ele atende HTTP. Não olha as dependências (para isso, /ready)."""
    return HealthOut()


@get("/ready", opt={"public": True}, tags=["health"],
     responses={HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
         ReadyOut, description="Não pronto: InfluxDB ou a sessão MQTT indisponível (motivos em 'checks').",
         generate_examples=False)})
async def ready(services: NamedDependency[Services]) -> Response[ReadyOut]:
    """Prontidão da réplica: o InfluxDB responde ao /ping e (com a ingestão ligada) a sessão MQTT está conectada.

    200 com ``status: ready``, ou 503 com ``status: not_ready`` e o motivo de cada verificação.
    """
    influx = services.influx
    try:
        if influx is None:
            raise InfluxError("no client")
        async with asyncio.timeout(3.0):
            influx_check = InfluxCheck(ok=True, version=await influx.ping())
    except (InfluxError, TimeoutError) as exc:
        influx_check = InfluxCheck(ok=False, error=str(exc)[:300])
    ingest = services.ingest
    mqtt_check = None if ingest is None else MqttCheck(
        ok=ingest.bridge.connected, client_id=ingest.bridge.client_id, unacked=ingest.unacked,
        adopted_sessions=sorted(ingest.adopter.adopted) if ingest.adopter else [],
        error=None if ingest.bridge.connected else ingest.bridge.last_error or "not connected yet")
    ok = influx_check.ok and (mqtt_check is None or mqtt_check.ok)
    return Response(ReadyOut(status="ready" if ok else "not_ready", checks=Checks(influxdb=influx_check,
                                                                                  mqtt=mqtt_check)),
                    status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


@get("/metrics", opt={"public": True}, tags=["health"], media_type="text/plain; version=0.0.4",
     sync_to_thread=False)
def metrics(services: NamedDependency[Services]) -> bytes:
    """Métricas do processo no formato de texto do Prometheus (ingestão, gravações no InfluxDB, rollups, MQTT)."""
    return services.metrics.render()
