"""Liveness, readiness and Prometheus metrics: public (no token), for orchestrators and scrapers."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from backend.api.state import Services
from backend.errors import InfluxError


@get("/health", opt={"public": True}, tags=["health"], sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness: the process serves HTTP. Does not look at dependencies (use /ready for that)."""
    return {"status": "ok"}


@get("/ready", opt={"public": True}, tags=["health"])
async def ready(services: NamedDependency[Services]) -> Response[dict[str, Any]]:
    """Readiness: InfluxDB answers /ping and (when ingest is enabled) the MQTT session is connected.

    Returns:
        200 with ``{"status": "ready", ...}`` or 503 with ``{"status": "not_ready", ...}`` and the reasons.
    """
    checks: dict[str, Any] = {}
    influx = services.influx
    try:
        if influx is None:
            raise InfluxError("no client")
        checks["influxdb"] = {"ok": True, "version": await asyncio.wait_for(influx.ping(), 3.0)}
    except (InfluxError, TimeoutError) as exc:
        checks["influxdb"] = {"ok": False, "error": str(exc)[:300]}
    ingest = services.ingest
    if ingest is not None:
        checks["mqtt"] = {"ok": ingest.bridge.connected, "client_id": ingest.bridge.client_id,
                          "unacked": ingest.unacked,
                          "adopted_sessions": sorted(ingest.adopter.adopted) if ingest.adopter else []}
        if not ingest.bridge.connected:
            checks["mqtt"]["error"] = ingest.bridge.last_error or "not connected yet"
    ok = all(c["ok"] for c in checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks},
                    status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


@get("/metrics", opt={"public": True}, tags=["health"], media_type="text/plain; version=0.0.4",
     sync_to_thread=False)
def metrics(services: NamedDependency[Services]) -> bytes:
    """Prometheus text exposition of the backend's metrics (ingest, InfluxDB writes, rollups, MQTT)."""
    return services.metrics.render()
