"""What one app instance holds for its lifetime (``app.state.services``) and how handlers reach it.

Every long-lived object has a typed handle here, filled in by the lifespan in ``backend/api/app.py`` and read
by the controllers through the ``services``/``influx``/``settings`` dependencies or :func:`analytics_service`.
A handle is None while its part is not running (before start-up, or disabled by the settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request

from backend.accounts.store import AccountStore
from backend.analytics.service import AnalyticsService
from backend.api.auth import Authenticator
from backend.errors import UnavailableError
from backend.ingest.devicebook import DeviceBook
from backend.ingest.limits import Budget
from backend.ingest.provisioning import Book
from backend.ingest.registry import Registry
from backend.ingest.service import IngestService
from backend.metrics import Metrics
from backend.ons.runtime import OnsService
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker


@dataclass
class Services:
    """Everything long-lived of one app instance."""

    settings: Settings
    metrics: Metrics
    registry: Registry
    authenticator: Authenticator
    influx: InfluxClient | None = None
    store: ReadingStore | None = None
    ingest: IngestService | None = None
    rollups: RollupWorker | None = None
    analytics: AnalyticsService | None = None
    ons: OnsService | None = None
    accounts: AccountStore | None = None
    devices: DeviceBook | None = None
    http_ingest_budget: Budget[str] | None = None
    """``POST /api/v1/aicss/dados`` requests per API user (limits.py)."""
    clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000
    """Now, in ms since the epoch, for the dashboard's "agora" and "hoje": one instant per request, which a test
    sets to stand at any moment of any day (a test of "hoje" run at 00:10 would otherwise see its readings of
    half an hour earlier fall on yesterday)."""


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def influx_of(request: Request[Any, Any, Any]) -> InfluxClient:
    influx = services_of(request).influx
    assert influx is not None, "InfluxDB client used outside the app lifespan"
    return influx


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    return services_of(request).settings


def book_of(services: Services) -> Book:
    """The device book's copy (empty before start-up: nothing is known to be provisioned yet)."""
    return services.devices.book if services.devices is not None else Book()


def device_book(request: Request[Any, Any, Any]) -> DeviceBook:
    book = services_of(request).devices
    if book is None:
        raise UnavailableError("Cadastro de dispositivos ainda não iniciado; tente novamente.")
    return book


def analytics_service(request: Request[Any, Any, Any]) -> AnalyticsService:
    svc = services_of(request).analytics
    if svc is None:
        raise UnavailableError("Serviço de análise não iniciado.")
    return svc
