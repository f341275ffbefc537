"""The one gap rule (issue 11): raw readings, the energy series and the 1-hour fallback split a gap alike.

One meter of a Light site (Tarifa Branca: intermediário 16:30-17:30 and 20:30-21:30, ponta 17:30-20:30), Tuesday
2026-06-02, a reading at the start of every minute from 00:00 to 24:00, 10 Wh per minute (600 W). No reading
arrives after 17:14 until 18:30; the register meanwhile counted 1 520 Wh.

The rule: the gap runs from the minute of the last reading (17:14) to the minute of the first reading after it
(18:30), 76 minutes, 20 Wh each: 46 minutes (920 Wh) in the 17:00 hour, 30 (600 Wh) in the 18:00 hour.

* 17:00: 14 steps (17:00 -> 17:14) = 140 Wh + 920 Wh = 1,06 kWh (before: the series 1,052, spreading from the end
  of the 17:14 minute; the 1-hour fallback 1,66, the whole gap at the end of the 17:00 hour; raw 1,06);
* 18:00: 600 Wh + 30 steps (18:30 -> 19:00) = 0,9 kWh; every other hour 0,6 kWh; the day 15,16 kWh.
* postos (hours split evenly over their quarters): intermediário 0,3 (16:30) + 0,53 (17:00) + 0,3 + 0,3 = 1,43;
  ponta 0,53 + 0,9 + 0,6 + 0,3 = 2,33; fora ponta 15,16 − 1,43 − 2,33 = 11,40 kWh.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec
import pytest

from backend.aneel.client import AneelClient
from backend.aneel.postos import KNOWN_WINDOWS, split_by_posto
from backend.aneel.sites import parse_sites
from backend.aneel.sync import sync
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.registers import Consumption, Sample, register_intervals
from backend.store.rollups import RollupWorker, energy_from_ms
from devstack.aneel_fake import FakeCkan
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

DEV = "00000000000000d7"
SITE = "gr"
MIN = 60_000
DAY = 86_400_000
LIGHT = KNOWN_WINDOWS["LIGHT SESA"]
POSTOS = {"Ponta": 2.33, "Intermediário": 1.43, "Fora ponta": 11.40}


def test_a_gap_is_spread_from_the_minute_of_the_last_reading_to_the_minute_of_the_first() -> None:
    samples = [Sample(10 * MIN + 20_000, 1_000_000), Sample(40 * MIN + 5_000, 1_300_000)]  # 10:20 .. 40:05
    (iv,), stats = register_intervals(samples)
    assert (iv.t0, iv.t1, iv.mwh, iv.gap) == (10 * MIN, 40 * MIN, 300_000, True)
    assert stats.gaps == [(10 * MIN + 20_000, 40 * MIN + 5_000)]  # the readings themselves, as listed
    # A pair known to be a gap (from the 1-minute rollups) is one even below ``gap_ms``.
    (iv,), _ = register_intervals(samples, gap_ms=2 * 3_600_000, known_gaps={(10 * MIN + 20_000, 40 * MIN + 5_000)})
    assert (iv.t0, iv.t1, iv.gap) == (10 * MIN, 40 * MIN, True)


def day_lines(t0: int) -> list[str]:
    lines, energy = [], 30_000_000
    gap = (t0 + (17 * 60 + 14) * MIN, t0 + (18 * 60 + 30) * MIN)
    for i in range(1441):
        t = t0 + i * MIN
        if i:
            energy += 20_000 if gap[0] < t <= gap[1] else 10_000
        if gap[0] < t < gap[1]:
            continue
        lines.append(reading_line(SITE, "gw", Reading(device=DEV, boot=1, seq=i, ts=t, vrms=220.0, irms=2.7,
                                                      p=600.0, s=600.0, pf=1.0, freq=60.0, energy_mwh=energy)))
    return lines


def per_posto(c: Consumption) -> dict[str, float]:
    split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in c.buckets), LIGHT)
    return {k: round(v, 6) for k, v in split.kwh.items()}


@pytest.mark.asyncio
async def test_raw_series_and_hourly_fallback_give_the_same_kwh_per_posto(env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 2, tzinfo=TZ))
    await ReadingStore(client, settings).write(day_lines(t0), {DEV: (t0, t0 + DAY)})
    await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
    assert await energy_from_ms(client, settings) == 0
    sites = parse_sites(f'[[site]]\nid = "{SITE}"\ndistributor = "LIGHT SESA"\nmodality = "Branca"\n'
                        f'devices = ["{DEV}"]\n')
    svc = service(settings, client, sites)
    scope = svc.scope(SITE, None, None)
    long_a = t0 - 2 * DAY  # three days: beyond the raw range
    raw = await svc.consumo(scope, t0, t0 + DAY, "hour", with_peak=False)
    series = await svc.consumo(scope, long_a, t0 + DAY, "hour", with_peak=False)
    fallback = await svc.consumo(scope, long_a, t0 + DAY, "hour", with_peak=False, series=False)
    for c in (raw, series, fallback):
        hours = [b.kwh for b in c.buckets[-24:]]
        assert hours[17] == pytest.approx(1.06, abs=1e-6) and hours[18] == pytest.approx(0.9, abs=1e-6)
        assert hours[:17] + hours[19:] == pytest.approx([0.6] * 22, abs=1e-6)
        assert c.kwh_total == pytest.approx(15.16, abs=1e-6)
        assert per_posto(c) == pytest.approx(POSTOS, abs=1e-6)
        assert [b.estimated for b in c.buckets[-24:]].index(True) == 17 and len(c.gaps) == 1
    # ``tarifa-branca`` warns about the gap as ``custo`` does, on both bills.
    await svc.store.ensure_schema()
    with FakeCkan() as fake:
        async with AneelClient(fake.url, backoff_s=0.01) as c:
            assert (await sync(c, svc.store, list(sites.values()))).ok
    day = dt.date(2026, 6, 2)
    out = await svc.tarifa_branca(scope, day, day, t0, t0 + DAY)
    note = "1 lacuna(s) de dados no período: energia distribuída pelo intervalo"
    assert note in out.convencional.warnings and note in out.branca.warnings
    assert out.kwh == pytest.approx(POSTOS, abs=1e-3)
    assert note in (await svc.custo(scope, day, day, t0, t0 + DAY)).warnings


@pytest.mark.asyncio
async def test_a_meter_back_after_an_outage_keeps_the_energy_before_it_in_the_series(
        env: tuple[Settings, InfluxClient]) -> None:
    """The day's readings up to 17:14 are rolled up first, those from 18:30 in a later pass (the meter came back,
    or a catch-up reached them in a later chunk). The later pass widens its quarters back to the one of the last
    reading before the gap, 17:00-17:15, and must recompute it from all its readings: 140 Wh of steps plus the
    gap's share, the same 1,06 kWh for the 17:00 hour as one pass over the day (it kept only the gap's share)."""
    settings, client = env
    settings = msgspec.structs.replace(settings, rollup_chunk_s=2 * 86_400.0)  # one chunk per pass: late data only
    t0 = ms(dt.datetime(2026, 6, 2, tzinfo=TZ))
    lines = day_lines(t0)
    back = t0 + (18 * 60 + 30) * MIN
    before = [line for line in lines if int(line.rsplit(" ", 1)[1]) < back]
    for part, span in ((before, (t0, back - MIN)), (lines[len(before):], (back, t0 + DAY))):
        await ReadingStore(client, settings).write(part, {DEV: span})
        await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
    svc = service(settings, client, parse_sites(f'[[site]]\nid = "{SITE}"\ndistributor = "LIGHT SESA"\n'
                                                f'devices = ["{DEV}"]\n'))
    series = await svc.consumo(svc.scope(SITE, None, None), t0 - 2 * DAY, t0 + DAY, "hour", with_peak=False)
    hours = [b.kwh for b in series.buckets[-24:]]
    assert hours[17] == pytest.approx(1.06, abs=1e-6) and hours[18] == pytest.approx(0.9, abs=1e-6)
    assert series.kwh_total == pytest.approx(15.16, abs=1e-6)
