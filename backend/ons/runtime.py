"""The ONS side of a running backend: the store, the grid queries and the scheduled pulls.

:func:`open_ons` is an async context manager with no web framework in it: the app's lifespan enters it once the
InfluxDB client exists and leaves it on shutdown, which stops the scheduler before the HTTP client it uses is
closed. It never fails because InfluxDB or ONS is down at start-up: the schema is created again before each
pull, and the endpoints answer from whatever is stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from backend.errors import ConfigError, InfluxError
from backend.metrics import Metrics
from backend.ons.client import OnsClient
from backend.ons.datasets import DATASETS
from backend.ons.grid import GridData
from backend.ons.store import OnsStore
from backend.ons.sync import OnsScheduler
from backend.settings import Settings
from backend.store.influx import InfluxClient
from protocol.timebase import TZ


@dataclass
class OnsService:
    """Everything ONS of one app instance: ``grid`` answers the endpoints, ``scheduler`` pulls."""

    settings: Settings
    store: OnsStore
    grid: GridData
    scheduler: OnsScheduler


def first_year(settings: Settings) -> int:
    """The oldest year to pull (``BACKEND_ONS_FIRST_YEAR``; 0 = last year)."""
    return settings.ons_first_year or dt.datetime.now(TZ).year - 1


@asynccontextmanager
async def open_ons(settings: Settings, influx: InfluxClient, metrics: Metrics) -> AsyncIterator[OnsService]:
    """The ONS service, with its scheduler started when ``ons_sync_enabled``."""
    s = settings
    if s.ons_format not in ("parquet", "csv"):
        raise ConfigError(f"BACKEND_ONS_FORMAT: {s.ons_format!r} deve ser parquet ou csv")
    store = OnsStore(influx, s.influx_db)
    if s.influx_manage_schema:
        with contextlib.suppress(InfluxError):
            await store.ensure_schema()
    async with OnsClient(s.ons_base_url, file_hosts=s.ons_file_hosts.split(","), timeout_s=s.ons_timeout_s,
                         attempts=s.ons_attempts, backoff_max_s=s.ons_backoff_max_s) as client:
        scheduler = OnsScheduler(s, store, client, list(DATASETS.values()), first_year=first_year(s), metrics=metrics)
        service = OnsService(settings=s, store=store, grid=GridData(store, stale_s=s.ons_stale_s),
                             scheduler=scheduler)
        if s.ons_sync_enabled:
            scheduler.start()
        try:
            yield service
        finally:
            await scheduler.stop()
