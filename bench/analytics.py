"""Analytics query latency over 100 meters through the rollups, and the forecast's backtest error.

Starts its own influxd (Debian's package, temporary folder), writes a year of 1-hour rollups and a month of
1-minute rollups for N meters of one site (the shape backend/store/rollups.py produces), then times the real
service path (``AnalyticsService.consumo``: InfluxQL with bound parameters + register maths in Python):

* one meter, month (day buckets + peak demand from the 1-min rollup) and year (month buckets);
* the whole site (N meters summed), month (day buckets, with and without peak) and year (month buckets).

Whole-site queries read the site energy series (backend/store/energy_series.py). The month's are computed by the
real code (``EnergySeries.recompute`` over the month of 1-minute rollups, all meters, a day per call; the time
it takes is printed); the rest of the year, which has no 1-minute rollups here, gets its hourly site points
written directly from the same synthetic hourly energy (writing and rolling up a year of 1-minute rollups for
100 meters would take most of an hour); likewise the devices' daily series (``energy_d``) outside the month.
Device lists (groups) and single devices read the devices' series (``device list``: ``energy_q`` per 15 min,
``energy_d`` per local day); the same questions are also timed on the per-meter rollups (``per-device path``,
``series=False``: the service as it was before the series, still the fallback while they are backfilled).

Measured in the same run for comparison: a trivial ``SHOW DATABASES`` round trip (the floor) and fetching every
1-hour rollup row of the range without server-side folding (what the service avoids for day/week/month
buckets). Target: p95 < 200 ms. Run:

    .venv/bin/python bench/analytics.py          # 100 meters, 30 repetitions
    .venv/bin/python bench/analytics.py --quick  # 20 meters, 8 repetitions
"""

# ruff: noqa: E402  (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from bench/: keep bench/ (whose gateway.py would shadow the package) off the import path.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from backend.analytics.forecast import backtest
from backend.analytics.queries import fetch_samples
from backend.analytics.service import AnalyticsService, Scope, local_range
from backend.aneel.store import AneelData, AneelStore
from backend.settings import Settings
from backend.store.energy_series import FROM_FIELD, EnergySeries
from backend.store.influx import InfluxClient
from backend.store.layout import ENERGY_D, SITE_ENERGY, ensure_schema
from devstack.influxdb import InfluxService
from protocol.timebase import TZ

SITE = "bench-site"
TZ3 = dt.timezone(dt.timedelta(hours=-3))


def device(i: int) -> str:
    return f"{0xbe00000000000000 + i:016x}"


def load_w(hour: int, weekday: int, rnd: random.Random) -> float:
    base = 250.0 + (900 if 18 <= hour < 22 else 0) + (400 if 6 <= hour < 8 else 0)
    if weekday >= 5:
        base *= 1.2
    return max(base * rnd.uniform(0.7, 1.3), 50.0)


async def write_rollups(influx: InfluxClient, db: str, meters: int, year_start: dt.datetime,
                        month_start: dt.datetime) -> tuple[int, float, list[str]]:
    """r1h for a year and r1m for a month, per meter, with cumulative registers; returns (points, seconds,
    the devices' daily series outside the month, to be written after the month's energy series: their
    recompute rewrites the whole local days it touches, including the day before the month)."""
    t0 = time.perf_counter()
    points = 0
    site_hours: dict[int, int] = {}
    day_lines: list[str] = []
    for i in range(meters):
        rnd = random.Random(i)
        dev = device(i)
        energy = 1_000_000 * i
        hours = 366 * 24
        lines: list[str] = []
        start_ms = int(year_start.timestamp() * 1000)
        minute_lines: list[str] = []
        month_ms = int(month_start.timestamp() * 1000)
        days: dict[int, int] = {}
        for h in range(hours):
            ts = start_ms + h * 3_600_000
            local = dt.datetime.fromtimestamp(ts / 1000, TZ3)
            watts = load_w(local.hour, local.weekday(), rnd)
            first = energy
            if month_ms <= ts < month_ms + 31 * 86_400_000:
                for m in range(60):
                    e0 = energy + int(watts * 1000 * m / 60)
                    minute_lines.append(
                        f"readings,device={dev},gateway=gw,site={SITE} n=6i,energy_first={e0}i,"
                        f"energy_last={e0 + int(watts * 1000 * 5 / 360)}i,boot_min=1i,boot_max=1i "
                        f"{ts + m * 60_000}")
            energy += int(watts * 1000)  # watts for one hour = watts Wh = watts*1000 mWh
            if not month_ms <= ts < month_ms + 31 * 86_400_000:
                site_hours[ts] = site_hours.get(ts, 0) + int(watts * 1000)
                day = int(dt.datetime.fromtimestamp(ts / 1000, TZ).replace(hour=0).timestamp() * 1000)
                days[day] = days.get(day, 0) + int(watts * 1000)
            lines.append(f"readings,device={dev},gateway=gw,site={SITE} n=360i,energy_first={first}i,"
                         f"energy_last={energy - int(watts * 1000 / 360)}i,boot_min=1i,boot_max=1i {ts}")
        month_days = {int(dt.datetime.fromtimestamp(month_ms / 1000 + d * 86_400, TZ).timestamp() * 1000)
                      for d in range(31)}
        day_lines.extend(f"{ENERGY_D},device={dev},gateway=gw,site={SITE} mwh={float(e)},est=0i,resets=0i,spikes=0i,"
                     f"jumps=0i {t}" for t, e in sorted(days.items()) if t not in month_days)
        for chunk in range(0, len(lines), 10_000):
            await influx.write(lines[chunk:chunk + 10_000], db, rp="r1h", precision="ms")
        for chunk in range(0, len(minute_lines), 20_000):
            await influx.write(minute_lines[chunk:chunk + 20_000], db, rp="r1m", precision="ms")
        points += len(lines) + len(minute_lines)
    site_lines = [f"{SITE_ENERGY},site={SITE} mwh={float(e)},est=0i,resets=0i,spikes=0i,jumps=0i,devices={meters}i {t}"
                  for t, e in sorted(site_hours.items())]
    for chunk in range(0, len(site_lines), 10_000):
        await influx.write(site_lines[chunk:chunk + 10_000], db, rp="r1h", precision="ms")
    return points, time.perf_counter() - t0, day_lines


async def energy_series(influx: InfluxClient, settings: Settings, month_start: dt.datetime) -> float:
    """The site energy series of the month from its 1-minute rollups, by the rollup worker's code."""
    t0 = time.perf_counter()
    energy = EnergySeries(influx, settings)
    start = int(month_start.timestamp() * 1000)
    for day in range(31):
        await energy.recompute(start + day * 86_400_000, start + (day + 1) * 86_400_000, None)
    # The worker's state: the energy series are complete (as after its backfill).
    await influx.write([f"rollup_state watermark_ns={time.time_ns()}i,{FROM_FIELD}=0i"], settings.influx_db,
                       rp="marks", precision="ns")
    return time.perf_counter() - t0


async def timed(fn: Callable[[], Awaitable[Any]], reps: int) -> list[float]:
    await fn()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name:<48} p50 {statistics.median(ms):8.1f} ms   p95 {p95:8.1f} ms   max {ms[-1]:8.1f} ms"


async def main(meters: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service = InfluxService(Path(tmp))
        service.start(timeout=60)
        try:
            settings = Settings(influx_url=service.url, influx_db="bench", retention_1m="INF", retention_raw="INF")
            async with InfluxClient(service.url, timeout=60) as influx:
                await ensure_schema(influx, settings)
                year_start = dt.datetime(2025, 11, 1, tzinfo=TZ3)
                month_start = dt.datetime(2026, 10, 1, tzinfo=TZ3)
                points, secs, day_lines = await write_rollups(influx, "bench", meters, year_start, month_start)
                print(f"data: {meters} meters, {points:,} rollup points written in {secs:.1f} s "
                      f"({points / secs:,.0f} points/s)")
                svc = AnalyticsService(settings=settings, influx=influx, sites={}, data=AneelData(
                    AneelStore(influx, "bench")), store=AneelStore(influx, "bench"))
                one = Scope(label=device(0), site=None, site_id=None, devices=[device(0)])
                site = Scope(label=SITE, site=None, site_id=SITE, devices=[])
                per_dev = Scope(label=SITE, site=None, site_id=None, devices=[device(i) for i in range(meters)])
                _, _, m0, m1 = local_range("2026-10-01", "2026-10-31")
                _, _, y0, y1 = local_range("2025-11-01", "2026-10-31")
                secs = await energy_series(influx, settings, month_start)
                for chunk in range(0, len(day_lines), 10_000):
                    await influx.write(day_lines[chunk:chunk + 10_000], "bench", rp="r1h", precision="ms")
                print(f"energy series of the month (15-min per meter and site, hourly site) computed in {secs:.1f} s")
                c = await svc.consumo(site, m0, m1, "day")
                d = await svc.consumo(per_dev, m0, m1, "day", series=False)
                g = await svc.consumo(per_dev, m0, m1, "day")
                print(f"check, site month: site series {c.kwh_total:,.3f} kWh, peak {c.peak_kw} kW at {c.peak_at}; "
                      f"per-device path {d.kwh_total:,.3f} kWh, peak {d.peak_kw} kW at {d.peak_at}; "
                      f"{len(c.buckets)} buckets; device list from the device series {g.kwh_total:,.3f} kWh, "
                      f"peak {g.peak_kw} kW at {g.peak_at}")
                cy = await svc.consumo(site, y0, y1, "month")
                dy = await svc.consumo(per_dev, y0, y1, "month", series=False)
                gy = await svc.consumo(per_dev, y0, y1, "month")
                print(f"check, site year: site series {cy.kwh_total:,.3f} kWh, "
                      f"per-device path {dy.kwh_total:,.3f} kWh, "
                      f"device series {gy.kwh_total:,.3f} kWh "
                      "(the 11 synthetic months' series points omit each meter's last 10 s per hour)")
                print(f"\nquery latency over {reps} repetitions (service path: InfluxQL + register maths):")
                results = {
                    "floor: SHOW DATABASES round trip": await timed(
                        lambda: influx.query("SHOW DATABASES"), reps),
                    "reference: every r1h row, 1 meter, year": await timed(
                        lambda: fetch_samples(influx, "bench", y0, y1, "r1h", devices=[device(0)]), reps),
                    "1 meter, month, day buckets + peak": await timed(
                        lambda: svc.consumo(one, m0, m1, "day"), reps),
                    "1 meter, year, month buckets": await timed(
                        lambda: svc.consumo(one, y0, y1, "month"), reps),
                    f"reference: every r1h row, site ({meters} m.), month": await timed(
                        lambda: fetch_samples(influx, "bench", m0, m1, "r1h", site=SITE), reps),
                    f"site ({meters} meters), month, day buckets": await timed(
                        lambda: svc.consumo(site, m0, m1, "day", with_peak=False), reps),
                    f"site ({meters} meters), month, day buckets + peak": await timed(
                        lambda: svc.consumo(site, m0, m1, "day"), reps),
                    f"reference: every r1h row, site ({meters} m.), year": await timed(
                        lambda: fetch_samples(influx, "bench", y0, y1, "r1h", site=SITE), max(3, reps // 4)),
                    f"site ({meters} meters), year, month buckets": await timed(
                        lambda: svc.consumo(site, y0, y1, "month"), reps),
                    f"site ({meters} meters), month, hour buckets": await timed(
                        lambda: svc.consumo(site, m0, m1, "hour"), reps),
                    f"site ({meters} meters), month, 15-min buckets": await timed(
                        lambda: svc.consumo(site, m0, m1, "15min"), reps),
                    f"per-device path: {meters} meters, month, day + peak": await timed(
                        lambda: svc.consumo(per_dev, m0, m1, "day", series=False), max(3, reps // 4)),
                    f"per-device path: {meters} meters, year, month": await timed(
                        lambda: svc.consumo(per_dev, y0, y1, "month", series=False), max(3, reps // 4)),
                    f"device list ({meters} m.), month, day + peak": await timed(
                        lambda: svc.consumo(per_dev, m0, m1, "day"), reps),
                    f"device list ({meters} m.), year, month buckets": await timed(
                        lambda: svc.consumo(per_dev, y0, y1, "month"), reps),
                    f"device list ({meters} m.), month, hour buckets": await timed(
                        lambda: svc.consumo(per_dev, m0, m1, "hour"), max(3, reps // 4)),
                    "1 meter, month, day + peak (device series)": await timed(
                        lambda: svc.consumo(one, m0, m1, "day"), reps),
                }
                for name, ms in results.items():
                    print(line(name, ms))

                daily = await svc.consumo(one, y0, y1, "day", with_peak=False)
                series = [b.kwh for b in daily.buckets]
                bt = backtest(series)
                assert bt is not None
                print(f"\nforecast backtest, meter {device(0)} (365 days, {bt.folds} weekly folds, {bt.days} days):")
                print(f"  method   {bt.method}: MAE {bt.mae_method_kwh:.3f} kWh/day")
                print(f"  baseline {bt.baseline}: MAE {bt.mae_baseline_kwh:.3f} kWh/day")
                print(f"  skill (1 - MAE/MAE_baseline): {bt.skill:+.1%}")
        finally:
            service.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 meters, 8 repetitions")
    ap.add_argument("--meters", type=int, default=100)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    asyncio.run(main(20 if args.quick else args.meters, 8 if args.quick else args.reps))
