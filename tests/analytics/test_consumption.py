"""Consumption from cumulative registers: resets, spikes, gaps, local calendar and peak demand."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

from backend.store.registers import Sample, bucket_edges, consumption, register_intervals

SP = ZoneInfo("America/Sao_Paulo")
MIN = 60_000


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=SP).timestamp() * 1000)


def steady(t0: int, n: int, step_ms: int, mwh_per_step: int, start: int = 0, boot: int = 1) -> list[Sample]:
    return [Sample(t0 + i * step_ms, start + i * mwh_per_step, boot) for i in range(n)]


def test_steady_load_hourly_buckets() -> None:
    t0 = ms(2026, 5, 4)
    samples = steady(t0, 121, MIN, 10_000)  # 10 Wh per minute = 600 W for 2 h
    c = consumption([samples], t0, t0 + 2 * 3_600_000, "hour")
    assert [b.kwh for b in c.buckets] == [0.6, 0.6]
    assert c.peak_kw == 0.6 and (c.resets, c.spikes, c.gaps) == (0, 0, [])
    assert c.buckets[0].start == "2026-05-04T00:00:00-03:00"


def test_register_reset_with_new_boot_counts_energy_since_reset() -> None:
    """Register at 5 000 000 mWh goes to 0 with a new boot: 60 x 10 Wh before, then 20 x 10 Wh after.

    The step across the reset: the register restarted at 0 and reads 10 000 mWh one minute later -> 10 Wh.
    Total = 59 steps x 10 + 10 + 19 steps x 10 = 790 Wh.
    """
    t0 = ms(2026, 5, 4)
    before = steady(t0, 60, MIN, 10_000, start=5_000_000, boot=7)
    after = steady(t0 + 60 * MIN, 20, MIN, 10_000, start=10_000, boot=8)
    intervals, stats = register_intervals(before + after)
    assert stats.resets == 1 and stats.spikes == 0
    assert sum(i.mwh for i in intervals) == 790_000


def test_register_reset_same_boot_is_confirmed_by_the_next_sample() -> None:
    t0 = ms(2026, 5, 4)
    before = steady(t0, 10, MIN, 10_000, start=9_000_000, boot=1)
    after = steady(t0 + 10 * MIN, 10, MIN, 10_000, start=10_000, boot=1)  # EEPROM wiped, same boot
    intervals, stats = register_intervals(before + after)
    assert (stats.resets, stats.spikes) == (1, 0)
    assert sum(i.mwh for i in intervals) == 9 * 10_000 + 10_000 + 9 * 10_000


def test_spike_up_and_down_is_dropped() -> None:
    """One corrupt reading 10 MWh above, one 4 kWh below (bit flips): both dropped, total unchanged."""
    t0 = ms(2026, 5, 4)
    s = steady(t0, 30, MIN, 10_000, start=1_000_000)
    s[10] = Sample(s[10].ts_ms, s[10].energy_mwh + 10_000_000_000, 1)
    s[20] = Sample(s[20].ts_ms, s[20].energy_mwh - 4_000_000, 1)
    intervals, stats = register_intervals(s)
    assert stats.spikes == 2 and stats.resets == 0
    assert sum(i.mwh for i in intervals) == 29 * 10_000


def test_level_jump_confirmed_counts_zero_for_the_jump() -> None:
    t0 = ms(2026, 5, 4)
    s = steady(t0, 5, MIN, 10_000) + steady(t0 + 5 * MIN, 5, MIN, 10_000, start=900_000_000)
    intervals, stats = register_intervals(s)
    assert stats.jumps == 1 and sum(i.mwh for i in intervals) == 8 * 10_000


def test_gap_keeps_energy_and_spreads_it_evenly() -> None:
    """600 W, readings every minute, then nothing from 01:00 to 03:00; the register advanced 1,2 kWh meanwhile.

    Hour buckets: 00h 0,6 kWh measured; 01h and 02h 0,6 each, spread over the gap (estimated); 03h 0,6 measured.
    Integrating power across the gap would give 0 for 01h-02h; the register keeps the total exact (2,4 kWh).
    """
    t0 = ms(2026, 5, 4)
    a = steady(t0, 61, MIN, 10_000)
    b = steady(t0 + 180 * MIN, 61, MIN, 10_000, start=a[-1].energy_mwh + 1_200_000)
    c = consumption([a + b], t0, t0 + 4 * 3_600_000, "hour")
    assert [b.kwh for b in c.buckets] == [0.6, 0.6, 0.6, 0.6]
    assert [b.estimated for b in c.buckets] == [False, True, True, False]
    assert c.kwh_total == 2.4 and len(c.gaps) == 1
    assert c.peak_kw == 0.6  # gap windows are not demand


def test_day_buckets_follow_local_midnight_not_utc() -> None:
    """1 kWh at 23:30 local on 4 May is 02:30 UTC on 5 May: it belongs to the local day 4 May."""
    t = ms(2026, 5, 4, 23, 0)
    s = [Sample(t, 0, 1), Sample(t + 30 * MIN, 500_000, 1), Sample(t + 60 * MIN, 1_000_000, 1)]
    c = consumption([s], ms(2026, 5, 4), ms(2026, 5, 6), "day", with_peak=False)
    assert [(b.start, b.kwh) for b in c.buckets] == [("2026-05-04T00:00:00-03:00", 1.0),
                                                      ("2026-05-05T00:00:00-03:00", 0.0)]


def test_historic_dst_days_have_23_and_25_hours() -> None:
    """DST began at 00:00 on 2018-11-04 (no local midnight) and ended at 00:00 on 2019-02-17."""
    start = bucket_edges(ms(2018, 11, 3), ms(2018, 11, 6), "day")
    assert [(b - a) // 3_600_000 for a, b in itertools.pairwise(start)] == [24, 23, 24]
    end = bucket_edges(ms(2019, 2, 15), ms(2019, 2, 18), "day")
    assert [(b - a) // 3_600_000 for a, b in itertools.pairwise(end)] == [24, 25, 24]


def test_month_and_week_edges() -> None:
    months = bucket_edges(ms(2026, 1, 15), ms(2026, 3, 2), "month")
    assert [dt.datetime.fromtimestamp(e / 1000, SP).date().isoformat() for e in months] == [
        "2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]
    weeks = bucket_edges(ms(2026, 5, 6), ms(2026, 5, 12), "week")
    assert [dt.datetime.fromtimestamp(e / 1000, SP).date().isoformat() for e in weeks] == [
        "2026-05-04", "2026-05-11", "2026-05-18"]


def test_peak_demand_is_the_best_clock_aligned_15_minutes_of_the_site() -> None:
    """Two devices: 1 kW constant, and 4 kW from 18:07 to 18:22. Windows 18:00-18:15 and 18:15-18:30 get
    8 and 7 minutes of 4 kW: 1 + 4 x 8/15 = 3,133 kW is the site's peak (sum of devices, not sum of peaks)."""
    t0 = ms(2026, 5, 4, 17)
    a = steady(t0, 121, MIN, 1_000_000 // 60)
    b = []
    energy = 0
    for i in range(121):
        b.append(Sample(t0 + i * MIN, energy, 1))
        if 67 <= i < 82:
            energy += 4_000_000 // 60
    c = consumption([a, b], t0, t0 + 2 * 3_600_000, "hour")
    assert c.peak_kw is not None and abs(c.peak_kw - (1 + 4 * 8 / 15)) < 0.01
    assert c.peak_at == "2026-05-04T18:00:00-03:00"
