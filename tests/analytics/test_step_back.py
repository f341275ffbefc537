"""A reboot whose register stepped back (issue 11): every query path gives the raw register's energy.

One meter, site ``sb``, 2026-06-01 (local), a reading every 10 s from 00:00:00 to 23:59:50, 1 000 mWh per step
(360 W), register around 50 kWh. At 12:00:30 it reboots (boot 1 -> 2) and its register restarts from its last
EEPROM save, 7 000 mWh lower; it keeps counting 1 000 mWh per step from there. The raw register's truth: 8 639
steps, one of them the step back (counts 0), 8 638 x 1 000 mWh = 8,638 kWh.

Inside the 12:00 minute the register reads E, E+1000, E+2000 | E-5000, E-4000, E-3000: its first/last/min/max alone
make the step back look like a reset to zero at E-3000 and lose the 2 000 mWh the new boot registered in that minute
(the series gave 8,636 kWh before the edge fields).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from backend.analytics.service import Scope
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.registers import Sample, edge_reset, register_intervals, window_samples
from backend.store.rollups import RollupWorker, energy_from_ms
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

DEV = "00000000000000b5"
SITE = "sb"
DAY = 86_400_000
TRUTH_KWH = 8.638


def day_lines(t0: int) -> list[str]:
    reboot = t0 + 12 * 3_600_000 + 30_000
    lines, boot, energy = [], 1, 50_000_000
    for i in range(DAY // 10_000):
        t = t0 + i * 10_000
        if i:
            energy += 1_000
        if t == reboot:
            boot, energy = 2, energy - 1_000 - 7_000  # this step's 1 000 mWh never counted, then 7 000 lost
        lines.append(reading_line(SITE, "gw", Reading(device=DEV, boot=boot, seq=i, ts=t, vrms=220.0, irms=1.6,
                                                      p=360.0, s=360.0, pf=1.0, freq=60.0, energy_mwh=energy)))
    return lines


def test_a_step_back_minute_keeps_the_energy_on_both_sides_of_the_reboot() -> None:
    # Readings 50 100 000, 50 101 000, 50 102 000 | reboot | 50 095 000, 50 096 000, 50 097 000 mWh, 10 s apart.
    reset = edge_reset(Sample(20_000, 50_102_000, 1), Sample(30_000, 50_095_000, 2), 50_000.0)
    assert reset == 0  # 50 kWh in 10 s is not energy since a reset to zero: a step back
    assert edge_reset(Sample(20_000, 50_102_000, 1), Sample(30_000, 20, 2), 50_000.0) == 20  # a real reset
    samples = window_samples(0, 50_100_000, 50_097_000, 1, 2, 50_102_000, 60_000, 50_102_000, 50_095_000, reset)
    intervals, stats = register_intervals(samples, min_dt_ms=60_000)
    assert sum(iv.mwh for iv in intervals) == 4_000 and stats.resets == 1  # 2 000 before, 0 at, 2 000 after
    # Judged over an hour instead (the 1-hour rollup), 50 kWh would look plausible: the stored verdict decides.
    hour = window_samples(0, 50_100_000, 50_097_000, 1, 2, 50_102_000, 3_600_000, 50_102_000, 50_095_000, reset)
    assert sum(iv.mwh for iv in register_intervals(hour, min_dt_ms=3_600_000, max_power_w=60_000.0)[0]) == 4_000
    old = window_samples(0, 50_100_000, 50_097_000, 1, 2, 50_102_000, 60_000)  # a rollup written without the edge
    assert sum(iv.mwh for iv in register_intervals(old, min_dt_ms=60_000)[0]) == 2_000
    # The edge is ignored when the window holds one boot (the step was at its start: the previous window's last
    # sample already meets it).
    assert window_samples(0, 50_095_000, 50_097_000, 2, 2, 50_097_000, 60_000, 50_102_000, 50_095_000) == [
        Sample(0, 50_095_000, 2), Sample(59_999, 50_097_000, 2)]


@pytest.mark.asyncio
async def test_step_back_reboot_loses_nothing_on_any_path(env: tuple[Settings, InfluxClient]) -> None:
    settings, client = env
    t0 = ms(dt.datetime(2026, 6, 1, tzinfo=TZ))
    await ReadingStore(client, settings).write(day_lines(t0), {DEV: (t0, t0 + DAY - 10_000)})
    await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
    assert await energy_from_ms(client, settings) == 0
    svc = service(settings, client)
    device = Scope(label=DEV, site=None, site_id=None, devices=[DEV])
    site = Scope(label=SITE, site=None, site_id=SITE, devices=[])
    a, b = t0, t0 + DAY
    raw_h = await svc.consumo(device, a, b, "hour")
    raw_q = await svc.consumo(device, a, b, "15min")
    assert raw_h.kwh_total == raw_q.kwh_total == TRUTH_KWH
    long_a = t0 - 3 * DAY  # beyond the raw range: the series (or the 1-hour rollup) answer
    for scope in (device, site):
        for granularity in ("15min", "hour", "day", "week", "month"):
            for series in (True, False):
                c = await svc.consumo(scope, long_a, b, granularity, with_peak=False,  # type: ignore[arg-type]
                                      series=series)
                assert c.kwh_total == TRUTH_KWH, (scope.label, granularity, series)
                assert c.resets == 1, (scope.label, granularity, series)
    day = await svc.consumo(site, a, b, "day")
    assert [x.kwh for x in day.buckets] == [TRUTH_KWH]
    noon = await svc.consumo(site, long_a, b, "hour")
    assert noon.buckets[-12].kwh == 0.359  # 12:00-13:00: the steps from 12:00:00 to 13:00:00 but the step back
