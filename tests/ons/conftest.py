"""Fixtures of the ONS tests: the fake ONS (fixed publication date, so every run sees the same files), a store on
a fresh database of the session's real InfluxDB, and a client with short retries."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from backend.ons.client import OnsClient
from backend.ons.store import OnsStore
from backend.store.influx import InfluxClient
from devstack.ons_fake import FakeOns
from protocol.timebase import TZ

UNTIL = dt.date(2026, 8, 26)
"""The fake's last published day: ONS's 12 h file of 2026-08-28 reached 08-26 23:00 (docs/ons.md)."""


@pytest.fixture
def fake() -> Iterator[FakeOns]:
    server = FakeOns(until=UNTIL).start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def store(influx, unique_id: str) -> AsyncIterator[OnsStore]:  # type: ignore[no-untyped-def]
    async with InfluxClient(influx.url) as client:
        s = OnsStore(client, unique_id)
        await s.ensure_schema()
        yield s
        await client.execute(f'DROP DATABASE "{unique_id}"', epoch=None)


@pytest_asyncio.fixture
async def client(fake: FakeOns) -> AsyncIterator[OnsClient]:
    async with OnsClient(fake.url, timeout_s=5, attempts=3, backoff_s=0.01, backoff_max_s=0.02) as c:
        yield c


def ms(wall: str) -> int:
    """UTC ms of a Brasília wall-clock time ``YYYY-MM-DD HH:MM``."""
    return int(dt.datetime.fromisoformat(wall).replace(tzinfo=TZ).timestamp() * 1000)
