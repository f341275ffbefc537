"""15-minute energy per device and per site, and hourly energy per site, kept current by the rollup worker.

Whole-site analytics over many meters would otherwise scan every meter's rollups on each request (a year of
1-hour rollups of 100 meters is 880k rows; a month of 1-minute rollups for the peak demand 4.5 M). The rollup
worker (store/rollups.py) therefore also maintains, after each ``r1m``/``r1h`` recompute:

=================  ====  ====================  ==================================================================
measurement        RP    tags                  content
=================  ====  ====================  ==================================================================
``energy_q``       r1m   site, gateway, device  per clock-aligned 15-min quarter: ``mwh`` (float), ``exp`` (float,
                                               exported mWh), ``est`` (0/1), ``resets``/``spikes``/``jumps`` (int)
``site_energy``    r1m   site                   the quarters summed over the site's devices: ``mwh``, ``exp``,
                                               ``est`` (max), ``resets``/``spikes``/``jumps`` (sums), ``devices``
``site_energy``    r1h   site                   the same summed per hour (``devices``: max)
``energy_d``       r1h   site, gateway, device  the device's quarters summed per local (America/Sao_Paulo) day, at
                                               the day's local midnight: ``mwh``, ``est`` (max), counts (sums)
``energy_gap``     r1m   site, device           one point per data gap, at the gap's end: ``t0_ms`` (its start)
=================  ====  ====================  ==================================================================

A device's quarters are computed exactly like :func:`backend.store.registers.consumption` does from the 1-minute
rollup: its register samples (:func:`~backend.store.registers.window_samples`) -> intervals with resets, spikes and
level jumps handled (:func:`~backend.store.registers.register_intervals`, the anomaly counts attributed to the
quarter of the anomalous sample) -> allocated evenly over time into the quarters (``est`` = part spread over a
gap). The exported-energy register (``export_*`` rollup fields) goes through the same steps into ``exp``; a minute
without it (an old meter, old data) reads as no export. The anomaly counts and ``est`` are the import register's.
The site series and the per-device days are then ``SELECT ... INTO`` sums of the quarters inside InfluxDB (the
days over whole local days, so a partial recompute never leaves a partial day sum).

Which quarters are recomputed for a dirty window ``[ds, de)`` of a device: from the quarter before ``ds``'s (an
anomaly just before the new data may be decided by it) to the end of ``de``'s quarter, widened to the ends of the
register intervals that cross these bounds — a gap closed by late data spreads its energy back to the last
reading before the gap, up to ``LOOK_MS`` (40 days) away; longer gaps are not spread in these series. Every
write overwrites the same points (measurement + tags + time) and gap points that no longer exist are deleted,
so passes repeated after a crash, or run by two replicas at once, converge on the same content.

Upgrades: the state point of the worker carries ``FROM_FIELD`` (``energy_v3_from_ms``), the time from which
these series are complete; its name changes whenever a series or field is added (``energy_from_ms`` had no
``energy_d``, ``energy_v2_from_ms`` no ``exp`` nor boot edges), so an older database is backfilled again (each
chunk rolled up again from the raw readings that are still kept, store/rollups.py). A database without this
field is backfilled backwards from the present, one ``BACKFILL_MS`` chunk per pass; until the backfill reaches a
query's start the analytics use the per-device rollups (0 = complete).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ENERGY_D, ENERGY_GAP, ENERGY_Q, RP_1H, RP_1M, SITE_ENERGY, table
from backend.store.lineprotocol import escape_key
from backend.store.registers import (
    Sample,
    allocate,
    bucket_edges,
    gap_for,
    min_dt_for,
    register_intervals,
    window_samples,
)
from protocol.ids import is_device_id
from protocol.timebase import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS

log = logging.getLogger(__name__)

FROM_FIELD: Final = "energy_v3_from_ms"
"""Field of the worker's state point: the time from which all these series are complete (module doc)."""
LOOK_MS: Final = 40 * DAY_MS
"""How far back (and ahead) a register interval crossing a recompute bound is followed (a data gap)."""
PAD_MS: Final = QUARTER_MS
"""1-minute rollups read beyond each side of the recomputed quarters (the neighbouring register values)."""
BACKFILL_MS: Final = 6 * HOUR_MS
"""Backfill per worker pass (all devices), in the worker's chunks (``rollup_chunk_s``)."""
_FIELDS: Final = ("energy_first, energy_last, boot_min, boot_max, energy_max, energy_pre, energy_post, energy_reset, "
           "export_first, export_last, export_max, export_pre, export_post, export_reset")
_KINDS: Final = ("resets", "spikes", "jumps")

_SUMS: Final = ("sum(mwh) AS mwh, sum(exp) AS exp, max(est) AS est, sum(resets) AS resets, sum(spikes) AS spikes, "
                "sum(jumps) AS jumps")
SITE_FROM_QUARTERS: Final = f"{_SUMS}, count(mwh) AS devices"
DEVICE_DAILY: Final = _SUMS
SITE_HOURLY: Final = f"{_SUMS}, max(devices) AS devices"


def _floor(t: int, step: int) -> int:
    return t - t % step


def _ceil(t: int, step: int) -> int:
    return t if t % step == 0 else t - t % step + step


@dataclass(slots=True)
class DeviceSeries:
    """One device's 1-minute register samples (import and export) and its tags."""

    site: str
    gateway: str
    samples: list[Sample] = field(default_factory=list)
    export: list[Sample] = field(default_factory=list)


@dataclass(slots=True)
class DeviceQuarters:
    """The recomputed quarters of one device: ``[start, end)`` and per quarter (mWh, est, counts)."""

    site: str
    gateway: str
    device: str
    start: int
    end: int
    mwh: list[float]
    exp: list[float]
    est: list[bool]
    counts: dict[str, list[int]]
    gaps: list[tuple[int, int]]


def device_quarters(dev: str, series: DeviceSeries, lo: int, hi: int, *, max_power_w: float) -> DeviceQuarters | None:
    """Quarters of ``dev`` covering ``[lo, hi)`` widened to the intervals crossing its bounds (module doc)."""
    events: list[tuple[int, str]] = []
    intervals, stats = register_intervals(series.samples, max_power_w=max_power_w, gap_ms=gap_for("r1m"),
                                          min_dt_ms=min_dt_for("r1m"), events=events)
    exported, _ = register_intervals(series.export, max_power_w=max_power_w, gap_ms=gap_for("r1m"),
                                     min_dt_ms=min_dt_for("r1m"))
    start, end = lo, hi
    for iv in intervals + exported:
        if iv.t0 < lo < iv.t1:
            start = min(start, iv.t0)
        if iv.t0 < hi < iv.t1:
            end = max(end, iv.t1)
    start, end = _floor(start, QUARTER_MS), _ceil(end, QUARTER_MS)
    if end <= start:
        return None
    edges = list(range(start, end + QUARTER_MS, QUARTER_MS))
    mwh, est = allocate(intervals, edges)
    exp, _ = allocate(exported, edges)
    n = len(mwh)
    counts = {k: [0] * n for k in _KINDS}
    for ts, kind in events:
        if start <= ts < end:
            counts[kind + "s"][(ts - start) // QUARTER_MS] += 1
    gaps = [(a, b) for a, b in stats.gaps if start <= b < end]
    return DeviceQuarters(series.site, series.gateway, dev, start, end, mwh, exp, est, counts, gaps)


def quarter_lines(q: DeviceQuarters) -> list[str]:
    tags = f"{ENERGY_Q},device={escape_key(q.device)},gateway={escape_key(q.gateway)},site={escape_key(q.site)}"
    return [f"{tags} mwh={q.mwh[i]!r},exp={q.exp[i]!r},est={int(q.est[i])}i,resets={q.counts['resets'][i]}i,"
            f"spikes={q.counts['spikes'][i]}i,jumps={q.counts['jumps'][i]}i {q.start + i * QUARTER_MS}"
            for i in range(len(q.mwh))]


def _device_regex(devices: set[str] | list[str]) -> str:
    valid = sorted(d for d in devices if is_device_id(d))  # hex ids: safe inside the regex
    return f"/^({'|'.join(valid)})$/" if valid else "/^$/"


class EnergySeries:
    """Recomputes the energy series for dirty windows (called by :class:`backend.rollups.RollupWorker`)."""

    def __init__(self, influx: InfluxClient, settings: Settings) -> None:
        self.influx = influx
        self.settings = settings

    async def _fetch(self, lo: int, hi: int, devices: set[str] | None) -> dict[str, DeviceSeries]:
        s = self.settings
        db = s.influx_db
        where = f"time >= {int(lo)}ms AND time < {int(hi)}ms"
        if devices is not None:
            where += f" AND device =~ {_device_regex(devices)}"
        series = await self.influx.query(
            f"SELECT {_FIELDS} FROM {table(db, RP_1M)} WHERE {where} GROUP BY device, site, gateway",
            db=s.influx_db)
        out: dict[str, DeviceSeries] = {}
        for ser in series:
            dev = ser.tags.get("device", "")
            d = out.setdefault(dev, DeviceSeries(ser.tags.get("site", ""), ser.tags.get("gateway", "")))
            for t, first, last, bmin, bmax, emax, pre, post, rst, xfirst, xlast, xmax, xpre, xpost, xrst in ser.values:
                d.samples.extend(window_samples(t, first, last, bmin, bmax, emax, MINUTE_MS, pre, post, rst))
                d.export.extend(window_samples(t, xfirst, xlast, bmin, bmax, xmax, MINUTE_MS, xpre, xpost, xrst))
        return out

    async def _neighbours(self, devs: list[str], lo: int, hi: int, *, last: bool) -> dict[str, DeviceSeries]:
        """The samples of each device's last (or first) 1-minute window in ``[lo, hi)``, with the rest of that
        window's quarter (and the pad beyond it): a gap widens the recomputed quarters to the one holding the
        neighbour, which must be recomputed from all of its readings, not from the neighbour's minute alone (a
        meter back after an outage that began at 17:14 would leave the 17:00 quarter only the gap's share)."""
        if not devs:
            return {}
        s = self.settings
        db = s.influx_db
        agg = "last(energy_last)" if last else "first(energy_first)"
        rows = await self.influx.rows(
            f"SELECT {agg} FROM {table(db, RP_1M)} WHERE time >= {int(lo)}ms AND time < {int(hi)}ms "
            f"AND device =~ {_device_regex(devs)} GROUP BY device", db=s.influx_db)
        # Meters whose neighbour is the same minute share one read: after a site-wide outage (the broker, the
        # gateway) that is every meter of the gateway, one query instead of one per meter.
        by_window: dict[tuple[int, int], set[str]] = defaultdict(set)
        for row in rows:
            minute = int(row["time"])
            a, b = ((_floor(minute, QUARTER_MS) - PAD_MS, minute + MINUTE_MS) if last
                    else (minute, _ceil(minute + MINUTE_MS, QUARTER_MS) + PAD_MS))
            by_window[(a, b)].add(row["device"])
        out: dict[str, DeviceSeries] = {}
        for (a, b), window_devs in sorted(by_window.items()):
            out.update(await self._fetch(a, b, window_devs))
        return out

    async def recompute(self, ds: int, de: int, devices: set[str] | None) -> int:
        """Device quarters for dirty window ``[ds, de)`` (ms) of ``devices`` (None = all), then the site series
        over the affected range. Returns the number of device quarters written."""
        lo, hi = _floor(ds, QUARTER_MS) - QUARTER_MS, _ceil(de, QUARTER_MS)
        data = await self._fetch(lo - PAD_MS, hi + PAD_MS, devices)
        before = [d for d, ser in data.items() if not any(x.ts_ms < lo for x in ser.samples)]
        after = [d for d, ser in data.items() if not any(x.ts_ms >= hi for x in ser.samples)]
        for dev, extra in (await self._neighbours(before, lo - LOOK_MS, lo - PAD_MS, last=True)).items():
            data[dev].samples.extend(extra.samples)
            data[dev].export.extend(extra.export)
        for dev, extra in (await self._neighbours(after, hi + PAD_MS, hi + LOOK_MS, last=False)).items():
            data[dev].samples.extend(extra.samples)
            data[dev].export.extend(extra.export)
        max_w = self.settings.analytics_max_power_w
        quarters = [q for dev, ser in data.items()
                    if (q := device_quarters(dev, ser, lo, hi, max_power_w=max_w)) is not None]
        if not quarters:
            return 0
        s = self.settings
        lines = [line for q in quarters for line in quarter_lines(q)]
        for i in range(0, len(lines), 5000):
            await self.influx.write(lines[i:i + 5000], s.influx_db, rp=RP_1M, precision="ms")
        await self._sync_gaps(quarters)
        ranges: dict[str, list[int]] = defaultdict(lambda: [hi, lo])
        for q in quarters:
            r = ranges[q.site]
            r[0], r[1] = min(r[0], q.start), max(r[1], q.end)
        for site, (a, b) in ranges.items():
            await self.site_rollup(site, _floor(a, HOUR_MS), _ceil(b, HOUR_MS))
        return sum(len(q.mwh) for q in quarters)

    async def _sync_gaps(self, quarters: list[DeviceQuarters]) -> None:
        """Gap points of the recomputed ranges: write the current ones, delete those that no longer exist."""
        s = self.settings
        db = s.influx_db
        lines = [f"{ENERGY_GAP},device={escape_key(q.device)},site={escape_key(q.site)} t0_ms={a}i {b}"
                 for q in quarters for a, b in q.gaps]
        if lines:
            await self.influx.write(lines, s.influx_db, rp=RP_1M, precision="ms")
        valid = [q for q in quarters if is_device_id(q.device)]
        if not valid:
            return
        lo, hi = min(q.start for q in valid), max(q.end for q in valid)
        devs = _device_regex([q.device for q in valid])
        series = await self.influx.query(
            f"SELECT t0_ms FROM {table(db, RP_1M, ENERGY_GAP)} WHERE device =~ {devs} "
            f"AND time >= {lo}ms AND time < {hi}ms GROUP BY device", db=s.influx_db)
        stored: dict[str, list[int]] = {ser.tags.get("device", ""): [int(v[0]) for v in ser.values] for ser in series}
        for q in valid:
            current = {b for _, b in q.gaps}
            for t in stored.get(q.device, []):
                if q.start <= t < q.end and t not in current:
                    await self.influx.execute(
                        f"DELETE FROM {ENERGY_GAP} WHERE device = '{q.device}' AND time >= {t}ms AND time <= {t}ms",
                        db=s.influx_db)

    async def site_rollup(self, site: str, a: int, b: int) -> None:
        """``site_energy`` (15 min, then 1 h) over ``[a, b)`` (hour-aligned) from the devices' quarters, and the
        devices' ``energy_d`` over the local days containing ``[a, b)``."""
        s = self.settings
        db = s.influx_db
        params: dict[str, Any] = {"site": site}
        await self.influx.execute(
            f"SELECT {SITE_FROM_QUARTERS} INTO {table(db, RP_1M, SITE_ENERGY)} FROM {table(db, RP_1M, ENERGY_Q)} "
            f"WHERE site = $site AND time >= {a}ms AND time < {b}ms GROUP BY time(15m), site fill(none)",
            db=s.influx_db, params=params)
        await self.influx.execute(
            f"SELECT {SITE_HOURLY} INTO {table(db, RP_1H, SITE_ENERGY)} FROM {table(db, RP_1M, SITE_ENERGY)} "
            f"WHERE site = $site AND time >= {a}ms AND time < {b}ms GROUP BY time(1h), site fill(none)",
            db=s.influx_db, params=params)
        days = bucket_edges(a, b, "day")
        await self.influx.execute(
            f"SELECT {DEVICE_DAILY} INTO {table(db, RP_1H, ENERGY_D)} FROM {table(db, RP_1M, ENERGY_Q)} "
            f"WHERE site = $site AND time >= {days[0]}ms AND time < {days[-1]}ms "
            f"GROUP BY time(1d), device, gateway, site fill(none) tz('America/Sao_Paulo')",
            db=s.influx_db, params=params)

    async def earliest_ms(self) -> int | None:
        """Time of the oldest 1-minute rollup (the backfill's end), or None when there is none."""
        s = self.settings
        db = s.influx_db
        rows = await self.influx.rows(f"SELECT first(n) FROM {table(db, RP_1M)}", db=s.influx_db)
        return int(rows[0]["time"]) if rows and rows[0].get("time") is not None else None
