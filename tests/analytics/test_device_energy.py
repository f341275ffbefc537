"""The per-device energy series (``energy_q`` per 15 min, ``energy_d`` per local day) answering device and group
scopes, against the per-meter computation from the 1-minute rollups, on a real InfluxDB.

Same day as tests/analytics/test_site_energy.py: A (720 W) resets at 09:00:30, B (360 W) has a spike at
15:20:50, C (1 440 W) has no readings from 10:00 to 12:00.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from backend.analytics.queries import fetch_samples
from backend.analytics.service import AnalyticsService, Scope
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.readings import dirty_mark_lines
from backend.store.registers import Consumption, consumption, gap_for, min_dt_for
from backend.store.rollups import RollupWorker, energy_from_ms
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service
from tests.analytics.test_site_energy import (
    DAY,
    A,
    B,
    C,
    assert_same_buckets,
    day_lines,
    rollup,
    write,
)

KWH = {A: 17.28, B: 8.64, C: 34.56}




def scope(devices: list[str]) -> Scope:
    return Scope(label="g", site=None, site_id=None, devices=devices)


async def pair(svc: AnalyticsService, devices: list[str], a: int, b: int, granularity: str) -> tuple[
        Consumption, Consumption]:
    """(energy series, per-meter rollups) for the same device list and range."""
    new = await svc.consumo(scope(devices), a, b, granularity)  # type: ignore[arg-type]
    old = await svc.consumo(scope(devices), a, b, granularity, series=False)  # type: ignore[arg-type]
    return new, old


async def python_peak(settings: Settings, client: InfluxClient, devices: list[str], a: int, b: int) -> float | None:
    """Peak demand of the sum as :func:`backend.consumption.consumption` computes it from the 1-minute rollup."""
    samples = await fetch_samples(client, settings.influx_db, a, b, "r1m", devices=devices)
    c = consumption(samples.values(), a, b, "15min", gap_ms=gap_for("r1m"), min_dt_ms=min_dt_for("r1m"),
                    max_power_w=settings.analytics_max_power_w)
    return c.peak_kw


@pytest.mark.asyncio
async def test_device_series_match_the_per_meter_computation_with_reset_spike_and_gap(
        env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    await write(settings, client, day_lines(t0), t0)
    await rollup(settings, client, 10)
    assert await energy_from_ms(client, settings) == 0
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    for devs, counts in (([A], (1, 0, 0)), ([B], (0, 1, 0)), ([C], (0, 0, 0)), ([A, B, C], (1, 1, 0)),
                         ([A, C], (1, 0, 0))):
        new, old = await pair(svc, devs, a, b, "15min")
        assert_same_buckets(new, old)
        assert new.kwh_total == old.kwh_total == pytest.approx(sum(KWH[d] for d in devs), abs=1e-6)
        assert (new.resets, new.spikes, new.jumps) == (old.resets, old.spikes, old.jumps) == counts
        assert new.gaps == old.gaps and len(new.gaps) == (1 if C in devs else 0)
        assert new.peak_kw == await python_peak(settings, client, devs, a, b)
        days, _ = await pair(svc, devs, a, b, "day")
        assert [x.kwh for x in days.buckets] == pytest.approx([0.0, sum(KWH[d] for d in devs), 0.0], abs=1e-6)
        assert days.resets == counts[0] and days.spikes == counts[1]
        assert days.peak_kw == new.peak_kw
        hours, _ = await pair(svc, devs, a, b, "hour")
        by_hour: dict[int, float] = {}
        for x in new.buckets:
            h = x.start_ms - x.start_ms % 3_600_000
            by_hour[h] = by_hour.get(h, 0.0) + x.kwh
        assert [x.kwh for x in hours.buckets] == pytest.approx([by_hour[x.start_ms] for x in hours.buckets], abs=1e-5)
    group, _ = await pair(svc, [A, B, C], a, b, "15min")
    assert group.peak_kw == 2.52  # the peak of the sum (720 + 360 + 1 440 W), not any one meter's
    # A range not on local midnights folds the quarters into days instead of reading the daily series.
    odd, _ = await pair(svc, [A, B, C], t0 + 3_600_000, t0 + 3 * DAY + 3_600_000, "day")
    assert odd.kwh_total == pytest.approx(60.48 - 2.52, abs=1e-6)
    db = settings.influx_db
    rows = await client.rows(f'SELECT count(mwh) FROM "{db}"."r1h"."energy_d" WHERE time >= {t0}ms '
                             f'AND time < {t0 + DAY}ms GROUP BY device', db=db)
    assert sorted(r["device"] for r in rows) == [A, B, C] and all(r["count"] == 1 for r in rows)


@pytest.mark.asyncio
async def test_device_series_follow_late_and_replayed_data(env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    lines = day_lines(t0)
    await write(settings, client, lines, t0)
    w1 = time.time_ns() + 100 * 10**9
    await RollupWorker(client, settings).run_once(now_ns=w1)
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    late = day_lines(t0, skip_gap=False, only_gap=True)
    hour = 3_600_000
    pieces = [(t0 + 11 * hour + 30 * 60_000, t0 + 12 * hour), (t0 + 10 * hour, t0 + 12 * hour)]
    for n, (p0, p1) in enumerate(pieces, start=1):
        chunk = [x for x in late if p0 <= int(x.rsplit(" ", 1)[1]) <= p1]
        await client.write(chunk, settings.influx_db, rp="raw", precision="ms")
        mark_ns = w1 + n * 200 * 10**9
        await client.write(dirty_mark_lines({C: (p0, p1)}, "late", mark_ns), settings.influx_db, rp="marks",
                           precision="ns")
        await RollupWorker(client, settings).run_once(now_ns=mark_ns + 10 * 10**9)
        for devs in ([C], [A, B, C]):
            new, old = await pair(svc, devs, a, b, "15min")
            assert_same_buckets(new, old)
            assert new.gaps == old.gaps and len(new.gaps) == (1 if n == 1 else 0)
            assert new.peak_kw == await python_peak(settings, client, devs, a, b)
            days, _ = await pair(svc, devs, a, b, "day")
            assert days.kwh_total == pytest.approx(sum(KWH[d] for d in devs), abs=1e-6)
            assert days.buckets[1].estimated == (n == 1)
    final, _ = await pair(svc, [A, B, C], a, b, "15min")
    assert final.peak_kw == 2.52 and not any(x.estimated for x in final.buckets)
    # The whole day replayed and the pass repeated: the device series do not change.
    await write(settings, client, lines, t0)
    mark_ns = w1 + 1000 * 10**9
    await client.write(dirty_mark_lines({d: (t0, t0 + DAY) for d in (A, B, C)}, "replay", mark_ns),
                       settings.influx_db, rp="marks", precision="ns")
    worker = RollupWorker(client, settings)
    await worker.run_once(now_ns=mark_ns + 10 * 10**9)
    await worker.run_once(now_ns=mark_ns + 11 * 10**9)
    again, _ = await pair(svc, [A, B, C], a, b, "15min")
    assert again == final
    days, _ = await pair(svc, [A, B, C], a, b, "day")
    assert [x.kwh for x in days.buckets] == pytest.approx([0.0, 60.48, 0.0], abs=1e-6)


@pytest.mark.asyncio
async def test_device_scope_falls_back_to_the_rollups_until_the_series_are_complete(
        env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    await write(settings, client, day_lines(t0), t0)
    await rollup(settings, client, 10)
    db = settings.influx_db
    await client.execute('DROP MEASUREMENT "energy_d"', db=db)  # as after an upgrade: no daily series yet
    await client.execute('DROP MEASUREMENT "rollup_state"', db=db)
    assert await energy_from_ms(client, settings) is None
    svc = service(settings, client)
    a, b = t0 - DAY, t0 + 2 * DAY
    new, old = await pair(svc, [A, B, C], a, b, "day")
    assert new == old and new.kwh_total == 60.48  # answered by the per-meter rollups
