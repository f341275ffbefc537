"""The InfluxDB query paths (raw, 1-min rollup, 1-hour rollup, days folded in InfluxDB, peak in InfluxDB) agree on
a register with a reset and a gap, and the forecast runs on stored data — all against the real InfluxDB."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from backend.analytics.service import Scope
from backend.aneel.client import AneelClient
from backend.aneel.sites import parse_sites
from backend.aneel.sync import sync
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.registers import choose_resolution
from backend.store.rollups import RollupWorker
from devstack.aneel_fake import FakeCkan
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

DEV = "00000000000000c1"
MIN = 60_000








@pytest.mark.asyncio
async def test_reset_and_gap_give_the_same_kwh_on_every_query_path(env: tuple[Settings, InfluxClient]) -> None:
    """600 W for 2 days, one reading a minute (10 Wh each), register read from t0 to t0+2d inclusive.

    * at day 1 12:00 the meter reboots (boot 1 -> 2) and its register restarts from 0: the first reading after
      it holds the 10 Wh of that minute;
    * day 2 10:00-12:00: no readings reach us, the register keeps counting.
    Every minute step is 10 Wh, so every path must give 2 x 1440 x 10 Wh = 28,8 kWh.
    """
    settings, client = env
    t0 = dt.datetime(2026, 6, 1, tzinfo=TZ)
    reset_at = ms(t0 + dt.timedelta(hours=12))
    gap = (ms(t0 + dt.timedelta(days=1, hours=10)), ms(t0 + dt.timedelta(days=1, hours=12)))
    lines, boot, energy = [], 1, 50_000_000
    for i in range(2 * 1440 + 1):
        t = ms(t0) + i * MIN
        if i:
            energy += 10_000
        if t == reset_at:
            boot, energy = 2, 10_000
        if gap[0] < t < gap[1]:
            continue
        lines.append(reading_line("qp", "gw", Reading(device=DEV, boot=boot, seq=i, ts=t, vrms=220.0, irms=2.7,
                                                      p=600.0, s=600.0, pf=1.0, freq=60.0, energy_mwh=energy)))
    await ReadingStore(client, settings).write(lines, {DEV: (ms(t0), ms(t0) + 2 * 1440 * MIN)})
    # Dirty marks carry the write time: a pass "10 s from now" processes them all.
    await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
    svc = service(settings, client)
    scope = Scope(label=DEV, site=None, site_id=None, devices=[DEV])
    a, b = ms(t0), ms(t0 + dt.timedelta(days=2))
    assert choose_resolution(a, b, "hour") == "raw"
    raw = await svc.consumo(scope, a, b, "hour")
    m15 = await svc.consumo(scope, a, b, "15min")
    long_a = ms(t0 - dt.timedelta(days=2))  # > 2 days: 1-hour rollup, hours and days folded in InfluxDB
    hourly = await svc.consumo(scope, long_a, b, "hour", with_peak=False)
    daily = await svc.consumo(scope, long_a, b, "day")
    assert raw.kwh_total == m15.kwh_total == hourly.kwh_total == daily.kwh_total == 28.8
    assert raw.resets == m15.resets == hourly.resets == daily.resets == 1
    assert [x.kwh for x in daily.buckets[-2:]] == [14.4, 14.4]
    assert any(x.estimated for x in raw.buckets) and raw.gaps
    assert raw.peak_kw == m15.peak_kw == daily.peak_kw == 0.6


@pytest.mark.asyncio
async def test_forecast_from_stored_rollups_with_cost(env: tuple[Settings, InfluxClient]) -> None:
    """60 days of hourly rollups (weekdays 10 kWh, weekends 16 kWh) up to today; CEMIG-D conventional price with
    taxes: (593,08 + 310,21 + bandeira of this month) / 1000 / ((1 - 0,18) x (1 - 0,0101 - 0,0468))."""
    settings, client = env
    today = dt.datetime.now(TZ).date()
    start = dt.datetime(today.year, today.month, today.day, tzinfo=TZ) - dt.timedelta(days=60)
    lines, energy = [], 0
    for h in range(61 * 24):
        t = start + dt.timedelta(hours=h)
        per_h = (16_000_000 if t.weekday() >= 5 else 10_000_000) // 24
        lines.append(f"readings,device={DEV},gateway=gw,site=fc n=60i,energy_first={energy}i,"
                     f"energy_last={energy + per_h - per_h // 60}i,boot_min=1i,boot_max=1i {ms(t)}")
        energy += per_h
    await client.write(lines, settings.influx_db, rp="r1h", precision="ms")
    sites = parse_sites('[[site]]\nid = "fc"\ndistributor = "CEMIG-D"\nicms = "0.18"\npis = "0.0101"\n'
                        f'cofins = "0.0468"\ndevices = ["{DEV}"]\n')
    svc = service(settings, client, sites)
    await svc.store.ensure_schema()
    with FakeCkan() as fake:
        async with AneelClient(fake.url, backoff_s=0.01) as c:
            assert (await sync(c, svc.store, list(sites.values()))).ok
    out = await svc.previsao(svc.scope("fc", None, None))
    assert out.history_days >= 56 and out.forecast.backtest is not None
    assert out.forecast.backtest.mae_method_kwh < 0.05  # a noise-free weekly pattern is learnt exactly
    week = sum(16.0 if (today + dt.timedelta(days=i)).weekday() >= 5 else 10.0 for i in range(7))
    assert abs(out.forecast.next_7_days.kwh - week) < 0.05
    await svc.data.load(force=True)
    flag = svc.data.flags.flag_for(today).adder_rs_mwh
    factor = (1 - Decimal("0.18")) * (1 - Decimal("0.0101") - Decimal("0.0468"))
    expected = ((Decimal("593.08") + Decimal("310.21") + flag) / 1000 / factor).quantize(Decimal("0.000001"))
    assert out.price_rs_kwh == expected
    assert out.next_7_days_cost_rs is not None
    assert out.next_7_days_cost_rs[0] == (Decimal(str(out.forecast.next_7_days.kwh)) * (
        (Decimal("593.08") + Decimal("310.21") + flag) / 1000 / factor)).quantize(Decimal("0.01"))
