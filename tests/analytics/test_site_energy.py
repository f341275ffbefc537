"""The site energy series (backend/energy_series.py) against the per-device computation, on a real InfluxDB.

Three meters of one site, a reading every 10 s for a day (so every step is a known number of mWh):

* A, 720 W (2 000 mWh a step), reboots at 09:00:30 (boot 1 -> 2) and its register restarts from 0;
* B, 360 W (1 000 mWh a step), one reading at 15:20:50 is a spike (+1 000 000 000 mWh);
* C, 1 440 W (4 000 mWh a step), no readings reach us from 10:00 to 12:00 (the register keeps counting).

The register is read from t0 to t0 + 1 day inclusive, so the site consumed (720 + 360 + 1 440) W x 24 h =
60,48 kWh, and its demand is 2,52 kW in every 15-min window the gap does not touch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping

import pytest

from backend.analytics.service import AnalyticsService, Scope
from backend.settings import Settings
from backend.store.influx import InfluxClient, Series
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore, dirty_mark_lines
from backend.store.registers import Consumption
from backend.store.rollups import RollupWorker, energy_from_ms
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

A, B, C = "00000000000000e1", "00000000000000e2", "00000000000000e3"
STEP = 10_000
DAY = 86_400_000
SITE = "se"








def day_lines(t0: int, *, skip_gap: bool = True, only_gap: bool = False) -> list[str]:
    """The day of the three meters (module doc); ``only_gap``: just C's readings of 10:00-12:00."""
    reset_at, spike_at = t0 + 9 * 3_600_000 + 30_000, t0 + 15 * 3_600_000 + 20 * 60_000 + 50_000
    gap = (t0 + 10 * 3_600_000, t0 + 12 * 3_600_000)
    lines = []
    energy = {A: 40_000_000, B: 7_000_000, C: 90_000_000}
    boot_a = 1
    for i in range(DAY // STEP + 1):
        t = t0 + i * STEP
        if i:
            energy[A] += 2_000
            energy[B] += 1_000
            energy[C] += 4_000
        if t == reset_at:
            boot_a, energy[A] = 2, 2_000
        in_gap = gap[0] < t < gap[1]
        for dev, p in ((A, 720.0), (B, 360.0), (C, 1440.0)):
            if only_gap and not (dev == C and in_gap):
                continue
            if skip_gap and dev == C and in_gap:
                continue
            value = energy[dev] + (1_000_000_000 if dev == B and t == spike_at else 0)
            lines.append(reading_line(SITE, "gw", Reading(
                device=dev, boot=boot_a if dev == A else 1, seq=i, ts=t, vrms=220.0, irms=p / 220, p=p, s=p,
                pf=1.0, freq=60.0, energy_mwh=value)))
    return lines


async def write(settings: Settings, client: InfluxClient, lines: list[str], t0: int) -> None:
    await ReadingStore(client, settings).write(lines, {d: (t0, t0 + DAY) for d in (A, B, C)})


async def both(svc: AnalyticsService, a: int, b: int, granularity: str) -> tuple[Consumption, Consumption]:
    """(whole site: the site series, the three devices: the per-device rollups) for the same range."""
    site = await svc.consumo(Scope(label=SITE, site=None, site_id=SITE, devices=[]), a, b,
                             granularity)  # type: ignore[arg-type]
    devs = await svc.consumo(Scope(label="abc", site=None, site_id=None, devices=[A, B, C]), a, b,
                             granularity, series=False)  # type: ignore[arg-type]
    return site, devs


def assert_same_buckets(site: Consumption, devs: Consumption) -> None:
    assert [b.start_ms for b in site.buckets] == [b.start_ms for b in devs.buckets]
    assert [b.kwh for b in site.buckets] == pytest.approx([b.kwh for b in devs.buckets], abs=2e-6)
    assert [b.estimated for b in site.buckets] == [b.estimated for b in devs.buckets]


async def rollup(settings: Settings, client: InfluxClient, offset_s: int) -> None:
    # Dirty marks carry the write time: a pass "offset_s from now" processes every mark written so far.
    await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + offset_s * 10**9)


@pytest.mark.asyncio
async def test_site_series_match_the_per_device_computation_with_reset_spike_and_gap(
        env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    await write(settings, client, day_lines(t0), t0)
    await rollup(settings, client, 10)
    assert await energy_from_ms(client, settings) == 0
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY  # > 2 days: 15-min buckets from the 1-minute rollup on the per-device path
    site, devs = await both(svc, a, b, "15min")
    assert_same_buckets(site, devs)
    assert site.kwh_total == devs.kwh_total == 60.48
    assert (site.resets, site.spikes, site.jumps) == (devs.resets, devs.spikes, devs.jumps) == (1, 1, 0)
    assert site.gaps == devs.gaps and len(site.gaps) == 1
    assert site.gaps[0][0].startswith("2026-06-01T10:00") and site.gaps[0][1].startswith("2026-06-01T12:00")
    assert any(x.estimated for x in site.buckets)
    assert site.peak_kw == 2.52
    quarters = {x.start_ms: x.kwh for x in site.buckets if not x.estimated and x.kwh}
    assert set(quarters.values()) == {0.63}  # 2,52 kW x 15 min, the reset's and the spike's quarters included
    # Hours and days come from the site's hourly series: the sums of its quarters, and outside the gap the same
    # energy as the per-device 1-hour rollups (which judge gaps per hour, so they spread C's gap differently).
    site_h, devs_h = await both(svc, a, b, "hour")
    assert site_h.kwh_total == devs_h.kwh_total == 60.48
    by_hour: dict[int, float] = {}
    for x in site.buckets:
        by_hour[x.start_ms - x.start_ms % 3_600_000] = by_hour.get(x.start_ms - x.start_ms % 3_600_000, 0) + x.kwh
    assert [x.kwh for x in site_h.buckets] == pytest.approx([by_hour[x.start_ms] for x in site_h.buckets], abs=1e-5)
    assert [x.estimated for x in site_h.buckets].count(True) == 2  # 10:00 and 11:00
    outside = [i for i, x in enumerate(site_h.buckets) if not x.estimated]
    assert [site_h.buckets[i].kwh for i in outside] == pytest.approx([devs_h.buckets[i].kwh for i in outside],
                                                                     abs=2e-6)
    site_d, devs_d = await both(svc, a, b, "day")
    assert [x.kwh for x in site_d.buckets] == [x.kwh for x in devs_d.buckets] == [0.0, 60.48, 0.0]
    assert site_d.resets == devs_d.resets == 1


@pytest.mark.asyncio
async def test_site_series_follow_late_and_replayed_data_idempotently(env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    lines = day_lines(t0)
    await write(settings, client, lines, t0)
    w1 = time.time_ns() + 100 * 10**9
    await RollupWorker(client, settings).run_once(now_ns=w1)
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    before, _ = await both(svc, a, b, "15min")
    assert before.gaps and before.kwh_total == 60.48
    # C's two missing hours arrive late and in pieces (a gateway emptying its buffer): 11:30-12:00 first (the
    # gap before it, back to 10:00, is recomputed), then 10:00-10:30 (the gap after it, up to 11:30), then the
    # rest; after each piece the site series agree with the per-device computation.
    late = day_lines(t0, skip_gap=False, only_gap=True)
    hour = 3_600_000
    pieces = [(t0 + 11 * hour + 30 * 60_000, t0 + 12 * hour), (t0 + 10 * hour, t0 + 10 * hour + 30 * 60_000),
              (t0 + 10 * hour, t0 + 12 * hour)]
    for n, (p0, p1) in enumerate(pieces, start=1):
        # Each piece's dirty mark is spaced so that its pass recomputes only that piece's windows (the worker
        # re-reads marks up to 60 s older than its watermark): the widening to the neighbouring readings is tested.
        chunk = [x for x in late if p0 <= int(x.rsplit(" ", 1)[1]) <= p1]
        await client.write(chunk, settings.influx_db, rp="raw", precision="ms")
        mark_ns = w1 + n * 200 * 10**9
        await client.write(dirty_mark_lines({C: (p0, p1)}, "late", mark_ns), settings.influx_db, rp="marks",
                           precision="ns")
        await RollupWorker(client, settings).run_once(now_ns=mark_ns + 10 * 10**9)
        site, devs = await both(svc, a, b, "15min")
        assert_same_buckets(site, devs)
        assert site.gaps == devs.gaps and len(site.gaps) == (1 if n < 3 else 0)
        assert site.kwh_total == 60.48
    site, devs = await both(svc, a, b, "15min")
    assert_same_buckets(site, devs)
    assert site.gaps == devs.gaps == [] and not any(x.estimated for x in site.buckets)
    assert site.kwh_total == 60.48 and site.peak_kw == 2.52
    assert {x.kwh for x in site.buckets if x.kwh} == {0.63}
    # The whole day replayed, then two workers (two replicas) at once and a repeated pass: nothing changes.
    await write(settings, client, lines, t0)
    mark_ns = w1 + 1000 * 10**9
    await client.write(dirty_mark_lines({d: (t0, t0 + DAY) for d in (A, B, C)}, "replay", mark_ns),
                       settings.influx_db, rp="marks", precision="ns")
    r1, r2 = RollupWorker(client, settings), RollupWorker(client, settings)
    now = mark_ns + 10 * 10**9
    await asyncio.gather(r1.run_once(now_ns=now), r2.run_once(now_ns=now))
    await r1.run_once(now_ns=now + 10**9)
    again, _ = await both(svc, a, b, "15min")
    assert again == site
    hourly, _ = await both(svc, a, b, "hour")
    assert hourly.kwh_total == 60.48 and {x.kwh for x in hourly.buckets if x.kwh} == {2.52}


@pytest.mark.asyncio
async def test_site_series_backfill_after_an_upgrade(env: tuple[Settings, InfluxClient]) -> None:
    """A database with rollups but no energy series (written before they existed): the service answers from
    the per-device rollups until the worker's backfill, one chunk per pass, reaches the data; then the series."""
    settings, client = env
    day0 = dt.datetime.now(TZ).date() - dt.timedelta(days=2)
    t0 = ms(dt.datetime(day0.year, day0.month, day0.day, tzinfo=TZ))
    await write(settings, client, day_lines(t0), t0)
    await rollup(settings, client, 10)
    db = settings.influx_db
    for m in ("energy_q", "site_energy", "energy_gap", "rollup_state"):
        await client.execute(f'DROP MEASUREMENT "{m}"', db=db)
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    assert await energy_from_ms(client, settings) is None
    fallback, devs = await both(svc, a, b, "15min")
    assert fallback == devs  # answered by the per-device path
    worker = RollupWorker(client, settings)
    passes = 0
    while await energy_from_ms(client, settings) != 0:
        passes += 1
        assert passes < 40, "backfill did not finish"
        await worker.run_once(now_ns=time.time_ns() + 10**9)
    rows = await client.rows(f'SELECT count(mwh) FROM "{db}"."r1m"."site_energy"', db=db)
    assert rows and rows[0]["count"] >= 96
    site, devs = await both(svc, a, b, "15min")
    assert_same_buckets(site, devs)
    assert site.kwh_total == 60.48 and site.peak_kw == 2.52 and site.resets == 1


class NeighbourReads(InfluxClient):
    """The real client, recording the 1-minute reads the energy series sends per meter set (``GROUP BY device,
    site, gateway`` on ``r1m``): the recomputed window's, and those of the neighbours across a gap."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads: list[str] = []

    async def query(self, q: str, *, db: str | None = None,
                    params: Mapping[str, str | int | float | bool] | None = None,
                    epoch: str | None = "ms") -> list[Series]:
        if '."r1m"."readings" ' in q and q.endswith("GROUP BY device, site, gateway"):
            self.reads.append(q)
        return await super().query(q, db=db, params=params, epoch=epoch)


@pytest.mark.asyncio
async def test_a_whole_gateway_back_from_an_outage_reads_its_neighbours_once(
        env: tuple[Settings, InfluxClient]) -> None:
    """All three meters silent from 10:00 to 12:00 (their gateway down), the last half hour arriving first: the
    recomputed quarters reach back to the readings before the gap, and the three meters' last minute there is
    the same, so the pass reads it once for all of them (it used to read it once per meter). The site series
    still match the per-device computation, the gap shown until the rest arrives."""
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    hour = 3_600_000
    gap = (t0 + 10 * hour, t0 + 12 * hour)

    def stamp(line: str) -> int:
        return int(line.rsplit(" ", 1)[1])

    def ends_before_the_gap(q: str) -> bool:
        return int(q.split("time < ")[1].split("ms")[0]) <= gap[0] + 60_000

    lines = day_lines(t0, skip_gap=False)
    await write(settings, client, [x for x in lines if not gap[0] < stamp(x) < gap[1]], t0)
    w1 = time.time_ns() + 100 * 10**9
    await RollupWorker(client, settings).run_once(now_ns=w1)
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    before, _ = await both(svc, a, b, "15min")
    assert len(before.gaps) == 3 and before.kwh_total == 60.48

    pieces = [(t0 + 11 * hour + 30 * 60_000, gap[1]), (gap[0], gap[1])]
    async with NeighbourReads(settings.influx_url) as counting:
        for n, (p0, p1) in enumerate(pieces, start=1):
            late = [x for x in lines if gap[0] < stamp(x) < gap[1] and p0 <= stamp(x) <= p1]
            await client.write(late, settings.influx_db, rp="raw", precision="ms")
            mark_ns = w1 + n * 200 * 10**9
            await client.write(dirty_mark_lines({d: (p0, p1) for d in (A, B, C)}, "late", mark_ns),
                               settings.influx_db, rp="marks", precision="ns")
            counting.reads.clear()
            await RollupWorker(counting, settings).run_once(now_ns=mark_ns + 10 * 10**9)
            site, devs = await both(svc, a, b, "15min")
            assert_same_buckets(site, devs)
            assert site.kwh_total == 60.48
            if n == 1:
                # the windows recomputed start at 11:00 at the earliest; before the gap, one read for all three
                neighbours = [q for q in counting.reads if ends_before_the_gap(q)]
                assert len(neighbours) == 1 and all(d in neighbours[0] for d in (A, B, C)), neighbours
                assert len(site.gaps) == 3
    assert site.gaps == devs.gaps == [] and not any(x.estimated for x in site.buckets)
    assert {x.kwh for x in site.buckets if x.kwh} == {0.63}
