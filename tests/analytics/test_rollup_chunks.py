"""A rollup backlog worked off in chunks, on a real InfluxDB (backend/store/rollups.py, "Why chunks").

The day of test_site_energy.py (three meters, a reboot, a spike, a two-hour gap) arrives as one write, so the
worker sees one dirty window of a day. Rolled up in hour-sized chunks it must give exactly what one pass over the
whole window gives, every query bounded by the chunk; and when InfluxDB cannot finish a query within the timeout,
the worker must send smaller ones next time and get through, never the same query again and again.

The timeout is the only thing not real: :class:`TooSlowFor` is the real client talking to the real InfluxDB,
except that it answers a ``SELECT ... INTO`` from the raw readings over more than ``limit_ms`` the way the client
answers a query InfluxDB did not finish within its timeout (:class:`~backend.errors.InfluxTimeoutError`) — before
sending it, so that what InfluxDB holds is exactly what the worker wrote.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from backend.errors import InfluxTimeoutError
from backend.settings import Settings
from backend.store.influx import InfluxClient, StatementResult
from backend.store.layout import (
    ENERGY_D,
    ENERGY_GAP,
    ENERGY_Q,
    READINGS,
    RP_1H,
    RP_1M,
    RP_RAW,
    SITE_ENERGY,
    ensure_schema,
    table,
)
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker, merge_windows
from protocol.timebase import HOUR_MS, MINUTE_MS, TZ
from tests.analytics.conftest import ms
from tests.analytics.test_injection import G as INJECTING
from tests.analytics.test_injection import P as GENERATING
from tests.analytics.test_injection import lines as injection_lines
from tests.analytics.test_site_energy import DAY, day_lines, write

T0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
"""The day of test_site_energy.py (03:00 UTC: a 4-hour grid cuts its first hour off)."""
ROLLED = ((RP_1M, READINGS), (RP_1H, READINGS), (RP_1M, ENERGY_Q), (RP_1M, SITE_ENERGY), (RP_1H, SITE_ENERGY),
          (RP_1H, ENERGY_D), (RP_1M, ENERGY_GAP))
"""Everything a pass writes: both rollups, the energy series and the gap points."""
Rolled = dict[tuple[str, str], list[tuple[Any, ...]]]
"""Every point of :data:`ROLLED`, as (tags, time, fields...) in order, per (retention policy, measurement)."""
PASS_S = 120
"""Seconds between the passes of a test: more than the worker's overlap, so a pass reads only new marks and what
the previous pass recorded as left to do (the progress under test), never the original mark again."""


class TooSlowFor(InfluxClient):
    """The real client, but a ``SELECT ... INTO`` from the raw readings over more than ``limit_ms`` times out."""

    def __init__(self, url: str, limit_ms: int | None = None) -> None:
        super().__init__(url)
        self.limit_ms = limit_ms
        self.sent: list[tuple[int, int]] = []
        """Spans (ms) of the raw -> 1-minute queries sent to InfluxDB."""
        self.timed_out: list[tuple[int, int]] = []

    async def execute(self, q: str, *, db: str | None = None,
                      params: Mapping[str, str | int | float | bool] | None = None,
                      epoch: str | None = "ms") -> list[StatementResult]:
        if db and f" INTO {table(db, RP_1M)} FROM {table(db, RP_RAW)} " in q and params:
            span = (int(params["start"]) // 1_000_000, int(params["end"]) // 1_000_000)
            if self.limit_ms is not None and span[1] - span[0] > self.limit_ms:
                self.timed_out.append(span)
                raise InfluxTimeoutError("query timed out: ReadTimeout('')", db=db)
            self.sent.append(span)
        return await super().execute(q, db=db, params=params, epoch=epoch)


@pytest_asyncio.fixture
async def dbs(influx: Any, unique_id: str) -> AsyncIterator[tuple[Settings, Settings]]:
    """Two fresh databases holding the same day of readings: one for the single pass, one for the chunks."""
    made = []
    for name in (f"{unique_id}_one", f"{unique_id}_chunks"):
        settings = Settings(influx_url=influx.url, influx_db=name, retention_raw="INF", retention_1m="INF",
                            rollup_settle_s=0.0)
        async with InfluxClient(influx.url) as client:
            await ensure_schema(client, settings)
            await write(settings, client, day_lines(T0), T0)
        made.append(settings)
    yield made[0], made[1]
    async with InfluxClient(influx.url) as client:
        for settings in made:
            await client.execute(f'DROP DATABASE "{settings.influx_db}"', epoch=None)


async def contents(settings: Settings) -> Rolled:
    """Every point the worker wrote, as (tags, fields) in order, per retention policy and measurement."""
    db, out = settings.influx_db, {}
    async with InfluxClient(settings.influx_url) as client:
        for rp, measurement in ROLLED:
            series = await client.query(f"SELECT * FROM {table(db, rp, measurement)} GROUP BY *", db=db)
            out[(rp, measurement)] = sorted((tuple(sorted(s.tags.items())), *v) for s in series for v in s.values)
    return out


async def one_pass(settings: Settings) -> Rolled:
    """The reference: the whole window in one query (a chunk longer than the backlog, as before chunks)."""
    client = TooSlowFor(settings.influx_url)
    async with client:
        await RollupWorker(client, _with(settings, rollup_chunk_s=400 * 86_400.0)).run_once(
            now_ns=time.time_ns() + PASS_S * 10**9)
        assert covered(client.sent) == [(T0, T0 + DAY + MINUTE_MS)]
        assert max(b - a for a, b in client.sent) >= DAY
    return await contents(settings)


async def assert_same(chunked: Settings, one: Settings, expected: Rolled) -> None:
    """What the chunks wrote equals ``expected`` (what one pass wrote into ``one``).

    Seen once under a CPU hog: the chunked database lacked the ``energy_d`` rows of the day before (sums of the
    all-zero quarter 23:45-24:00 that the first chunk writes), everything else equal. On a mismatch the test
    names the rows each side lacks and reads both databases again: rows that are there on the second read were
    missed by a query, rows still absent were never written."""
    got = await contents(chunked)
    if got == expected:
        return
    again, reference = await contents(chunked), await contents(one)
    lines = []
    for key in ROLLED:
        a, b = set(got[key]), set(expected[key])
        if a != b:
            lines.append(f"{key}: chunked lacks {sorted(b - a)}, has extra {sorted(a - b)}; on a second read the "
                         f"chunked side is {'unchanged' if again[key] == got[key] else 'different'}, the one-pass "
                         f"side {'unchanged' if reference[key] == expected[key] else 'different'}")
    pytest.fail("chunks wrote other rows than one pass:\n" + "\n".join(lines))


def _with(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


def covered(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(w.start, w.end) for w in merge_windows([(a, b, set()) for a, b in spans], MINUTE_MS, 10 * DAY)]


@pytest.mark.asyncio
async def test_a_backlog_longer_than_a_chunk_is_rolled_up_hour_by_hour_exactly_as_in_one_pass(
        dbs: tuple[Settings, Settings]) -> None:
    one, chunked = dbs
    expected = await one_pass(one)
    client = TooSlowFor(chunked.influx_url)
    async with client:
        done = await RollupWorker(client, _with(chunked, rollup_chunk_s=3600.0)).run_once(
            now_ns=time.time_ns() + PASS_S * 10**9)
    assert done == 2 * 25  # 24 hours and the minute of the last reading, each rolled to minutes and hours
    assert all(b - a <= HOUR_MS and a % HOUR_MS == 0 for a, b in client.sent)
    assert covered(client.sent) == [(T0, T0 + DAY + MINUTE_MS)]
    await assert_same(chunked, one, expected)
    assert expected[(RP_1H, ENERGY_D)] and expected[(RP_1M, ENERGY_GAP)]  # the day's sums and C's gap are there


@pytest.mark.asyncio
async def test_a_query_timeout_halves_the_chunk_and_the_backlog_still_gets_done(
        dbs: tuple[Settings, Settings]) -> None:
    """InfluxDB finishes no raw -> 1-minute query over more than an hour in time; the worker starts with 4-hour
    chunks. Each timeout ends its pass with the chunk recorded as still to do and the size halved, so the next
    pass sends a smaller query for it, never the same one; what a pass finished is not sent again."""
    one, chunked = dbs
    expected = await one_pass(one)
    client = TooSlowFor(chunked.influx_url, limit_ms=HOUR_MS)
    async with client:
        worker = RollupWorker(client, _with(chunked, rollup_chunk_s=4 * 3600.0))
        start, passes, sent_before = time.time_ns(), 0, []
        while True:
            passes += 1
            assert passes <= 5, f"no end in sight: timed out {client.timed_out}"
            sent_before.append(len(client.sent))
            try:
                await worker.run_once(now_ns=start + passes * PASS_S * 10**9)
                break
            except InfluxTimeoutError:
                continue
    # 4 h timed out, then 2 h; 1 h gets through. Each timed-out query is strictly shorter than the one before.
    lengths = [b - a for a, b in client.timed_out]
    assert lengths == [4 * HOUR_MS, 2 * HOUR_MS] and passes == 3
    assert worker.chunk_ms == 4 * HOUR_MS  # back to the configured size once nothing is left behind
    # Progress is kept: no minute is rolled up twice, and together the chunks cover the day.
    assert len(client.sent) == len(set(client.sent))
    assert sum(b - a for a, b in client.sent) == DAY + MINUTE_MS
    assert covered(client.sent) == [(T0, T0 + DAY + MINUTE_MS)]
    assert sent_before[1] > 0  # the first pass finished the 4-hour grid's first piece (03:00-04:00 UTC)
    await assert_same(chunked, one, expected)


def test_windows_left_to_do_for_all_devices_absorb_device_lists_and_split_on_the_chunk_grid() -> None:
    ws = merge_windows([(0, 90 * MINUTE_MS, {"a"}), (30 * MINUTE_MS, 150 * MINUTE_MS, None),
                        (5 * HOUR_MS, 5 * HOUR_MS + 1, {"b"})], MINUTE_MS, HOUR_MS)
    assert [(w.start, w.end, w.devices) for w in ws] == [
        (0, HOUR_MS, None), (HOUR_MS, 2 * HOUR_MS, None), (2 * HOUR_MS, 150 * MINUTE_MS, None),
        (5 * HOUR_MS, 5 * HOUR_MS + MINUTE_MS, {"b"})]


@pytest.mark.asyncio
async def test_a_reboot_on_the_first_reading_of_a_chunk_keeps_its_boot_edge(influx: Any, unique_id: str) -> None:
    """test_injection.py's grid meter reboots at 12:00:00, the first reading of an hour chunk: the chunk's boot
    edges must still see the reading before it (the reset rule needs them), as one pass over the day does."""
    t0 = ms(dt.datetime(2026, 6, 2, tzinfo=TZ))
    rolled = []
    for name, chunk_s in ((f"{unique_id}_one", 400 * 86_400.0), (f"{unique_id}_chunks", 3600.0)):
        settings = Settings(influx_url=influx.url, influx_db=name, retention_raw="INF", retention_1m="INF",
                            rollup_settle_s=0.0, rollup_chunk_s=chunk_s)
        async with InfluxClient(influx.url) as client:
            await ensure_schema(client, settings)
            await write_injection_day(settings, client, t0)
            await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + PASS_S * 10**9)
            edge = await client.rows(f"SELECT export_pre, export_post, export_reset FROM {table(name, RP_1M)} "
                                     f"WHERE device = $d AND time = {t0 + 12 * HOUR_MS}ms", db=name,
                                     params={"d": INJECTING})
            everything = await contents(settings)
            await client.execute(f'DROP DATABASE "{name}"', epoch=None)
        rolled.append((edge, everything[(RP_1M, READINGS)], everything[(RP_1H, READINGS)]))
    assert rolled[0][0] and rolled[0][0][0]["export_reset"] is not None
    assert rolled[1] == rolled[0]


async def write_injection_day(settings: Settings, client: InfluxClient, t0: int) -> None:
    await ReadingStore(client, settings).write(injection_lines(t0), {INJECTING: (t0 - DAY, t0 + DAY),
                                                                     GENERATING: (t0, t0 + DAY)})
