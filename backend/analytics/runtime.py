"""The analytics side of a running backend: sites, ANEEL data and pulls, and the alert engine.

:func:`open_analytics` is an async context manager with no web framework in it: the app's lifespan enters it
once the InfluxDB client (and, when ingest runs, the MQTT bridge) exist, and leaves it on shutdown, which stops
the scheduler and the alert engine before the clients they use are closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from backend.analytics.alerts import AlertEngine, GatewayStatuses
from backend.analytics.service import AnalyticsService
from backend.aneel.sites import SiteConfigError, load_sites
from backend.aneel.store import AneelData, AneelStore
from backend.aneel.sync import AneelScheduler, aneel_client
from backend.errors import InfluxError
from backend.metrics import Metrics
from backend.settings import Settings
from backend.store.influx import InfluxClient

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publishes a retained MQTT message (the alert lists); None when this replica runs no ingest."""


@asynccontextmanager
async def open_analytics(settings: Settings, influx: InfluxClient, publish: Publish | None,
                         metrics: Metrics, gateways: GatewayStatuses) -> AsyncIterator[AnalyticsService]:
    """The analytics service with its ANEEL scheduler and alert engine started as the settings say; ``gateways``
    gives the alert engine the gateways' statuses that ingest keeps (analytics may not import ingest)."""
    s = settings
    try:
        sites = load_sites(Path(s.sites_file)) if s.sites_file else {}
    except SiteConfigError as exc:
        # A broken sites file must not keep ingest down: analytics answer "site not configured" until fixed.
        log.error("sites file invalid; analytics run without sites", extra={"error": str(exc)})
        sites = {}
    store = AneelStore(influx, s.influx_db)
    # InfluxDB may still be starting: the scheduler creates the schema again before each pull.
    with contextlib.suppress(InfluxError):
        await store.ensure_schema()
    data = AneelData(store)
    svc = AnalyticsService(settings=s, influx=influx, sites=sites, data=data, store=store)
    async with aneel_client(s) as client:
        svc.scheduler = AneelScheduler(s, store, data, list(sites.values()), client, metrics=metrics)
        if s.aneel_sync_enabled:
            svc.scheduler.start()
        svc.alerts = AlertEngine(s, influx, sites, publish, gateways=gateways)
        if s.alerts_enabled and sites:
            svc.alerts.start()
        try:
            yield svc
        finally:
            await svc.scheduler.stop()
            await svc.alerts.stop()
