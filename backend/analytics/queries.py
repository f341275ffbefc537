"""Typed InfluxQL queries that feed the analytics: register samples, peak demand and the energy series.

Every query binds site and device ids as parameters (or inlines only ids already validated as hex), so nothing
a caller sends reaches InfluxQL unescaped. The maths applied to what comes back lives in
``backend/store/registers.py``; the series read here are kept by ``backend/store/energy_series.py``.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from typing import Final, Literal
from zoneinfo import ZoneInfo

from backend.store.energy_series import LOOK_MS
from backend.store.influx import InfluxClient, Series
from backend.store.layout import ENERGY_D, ENERGY_GAP, ENERGY_Q, RP_1H, RP_1M, SITE_ENERGY, table
from backend.store.registers import (
    WINDOW_MS,
    Bucket,
    Consumption,
    Granularity,
    Resolution,
    Sample,
    bucket_edges,
    local_iso,
    window_samples,
)
from protocol.ids import is_device_id
from protocol.timebase import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, TZ

Register = Literal["import", "export"]
"""Which cumulative register: imported energy (``energy_mwh``) or exported energy (``energy_export_mwh``)."""
RAW_FIELD: Final[dict[Register, str]] = {"import": "energy_mwh", "export": "energy_export_mwh"}
PEAK_MAX_SPAN_MS: Final = 40 * DAY_MS
"""Peak demand needs 15-min windows, i.e. the 1-min rollup; beyond this span it is not computed."""


def _scope_where(start_ms: int, end_ms: int, site: str | None, devices: Sequence[str]) -> tuple[str, dict[str, str]]:
    if not site and not devices:
        raise ValueError("site or devices required")
    where = [f"time >= {int(start_ms)}ms", f"time <= {int(end_ms)}ms"]
    params: dict[str, str] = {}
    if site:
        where.append("site = $site")
        params["site"] = site
    if devices:
        ors = []
        for i, d in enumerate(devices):
            params[f"d{i}"] = d
            ors.append(f"device = $d{i}")
        where.append("(" + " OR ".join(ors) + ")")
    return " AND ".join(where), params


async def fetch_samples(
    influx: InfluxClient,
    db: str,
    start_ms: int,
    end_ms: int,
    resolution: Resolution,
    *,
    site: str | None = None,
    devices: Sequence[str] = (),
    per_day: bool = False,
    pad_ms: int | None = None,
    register: Register = "import",
) -> dict[str, list[Sample]]:
    """Register samples per device in ``[start_ms - pad, end_ms]`` (the pad gives the baseline before the start).

    Rollup windows become two samples: ``energy_first`` at the window start (with ``boot_min``) and
    ``energy_last`` just before its end (with ``boot_max``), so a reset inside a window is still recognisable;
    when a window contains a reset, ``energy_max`` (the register just before it) is added mid-window so the
    energy before the reset is not lost.
    ``per_day`` (1-hour rollup only) lets InfluxDB fold the hours into local days first (``GROUP BY time(1d)
    tz('America/Sao_Paulo')``): 24 times fewer rows for day/week/month buckets. Site and device ids are bound
    parameters, never spliced into the query text. ``pad_ms`` overrides the padding (``end_ms`` is inclusive).
    ``register="export"`` reads the exported-energy register instead (``energy_export_mwh``, rollup fields
    ``export_*``) with the same boots: a reading or window without it gives no sample, so old data reads as no
    export.
    """
    pad = {"raw": 15 * MINUTE_MS, "r1m": HOUR_MS, "r1h": DAY_MS}[resolution] if pad_ms is None else pad_ms
    where, params = _scope_where(start_ms - pad, end_ms, site, devices)
    src = table(db, resolution)  # the resolutions are named after their retention policies
    x = "energy" if register == "import" else "export"
    if per_day:
        if resolution != "r1h":
            raise ValueError("per_day needs the 1-hour rollup")
        q = (f"SELECT first({x}_first), last({x}_last), min(boot_min), max(boot_max), max({x}_max), "
             f"last({x}_pre), last({x}_post), last({x}_reset) FROM {src} WHERE {where} "
             "GROUP BY time(1d), device fill(none) tz('America/Sao_Paulo')")
    elif resolution == "raw":
        q = f"SELECT {RAW_FIELD[register]}, boot FROM {src} WHERE {where} GROUP BY device"
    else:
        q = (f"SELECT {x}_first, {x}_last, boot_min, boot_max, {x}_max, {x}_pre, {x}_post, {x}_reset FROM {src} "
             f"WHERE {where} GROUP BY device")
    series = await influx.query(q, db=db, params=params)
    out: dict[str, list[Sample]] = {}
    width = DAY_MS if per_day else WINDOW_MS[resolution]
    for s in series:
        dev = s.tags.get("device", "")
        samples = out.setdefault(dev, [])
        if resolution == "raw":
            for t, e, b in s.values:
                if e is not None:
                    samples.append(Sample(int(t), int(e), int(b) if b is not None else -1))
        else:
            for t, first, last, bmin, bmax, emax, pre, post, reset in s.values:
                samples.extend(window_samples(t, first, last, bmin, bmax, emax, width, pre, post, reset))
    return out


async def fetch_gap_edges(
    influx: InfluxClient, db: str, start_ms: int, end_ms: int, *, site: str | None = None,
    devices: Sequence[str] = (), gap_ms: int = 15 * MINUTE_MS, register: Register = "import",
) -> dict[str, tuple[list[Sample], list[tuple[int, int]]]]:
    """The 1-minute rollups on both sides of every data gap in the range, for the 1-hour fallback.

    A gap, by the one rule (docs/analytics.md), runs from the end of the last reading's minute to the start of the
    first reading's minute; the 1-hour rollup only knows the hours around it and would put all of its energy at
    an hour's end. InfluxDB finds the gaps (``elapsed`` between consecutive minutes with data, the few rows past
    ``gap_ms`` kept), then the two minutes around each are read as samples. Per device: those samples, and the
    pairs of sample times that are gaps (``known_gaps`` of :func:`backend.store.registers.register_intervals`).
    """
    where, params = _scope_where(start_ms - DAY_MS, end_ms, site, devices)
    rows = await influx.query(
        f"SELECT e FROM (SELECT elapsed(n, 1m) AS e FROM {table(db, RP_1M)} WHERE {where} GROUP BY device) "
        f"WHERE e > {gap_ms // MINUTE_MS - 1} GROUP BY device", db=db, params=params)
    out: dict[str, tuple[list[Sample], list[tuple[int, int]]]] = {}
    for s in rows:
        dev = s.tags.get("device", "")
        for t, e in s.values:
            m1 = int(t)
            m0 = m1 - int(e) * MINUTE_MS
            if m1 - (m0 + MINUTE_MS - 1) <= gap_ms:  # the same threshold as the 1-minute samples are judged by
                continue
            got = await fetch_samples(influx, db, m0, m1, "r1m", devices=[dev], pad_ms=0, register=register)
            samples, gaps = out.setdefault(dev, ([], []))
            samples.extend(got.get(dev, []))
            gaps.append((m0 + MINUTE_MS - 1, m1))
    return out


async def fetch_peak(
    influx: InfluxClient,
    db: str,
    start_ms: int,
    end_ms: int,
    *,
    site: str | None = None,
    devices: Sequence[str] = (),
    max_power_w: float = 50_000.0,
    tz: ZoneInfo = TZ,
) -> tuple[float | None, str | None]:
    """Peak demand of the sum of the devices, computed inside InfluxDB from the 1-minute rollup.

    Per device, the register difference between the ends of consecutive clock-aligned 15-min windows
    (``non_negative_difference(last(energy_last))``: resets give no value), kept only when the previous window
    had data too (``elapsed(...) = 1``: the first window after a gap would hold the whole gap's energy) and
    below ``max_power_w`` (spikes), summed over devices per window; the highest window wins.
    """
    where, params = _scope_where(start_ms - QUARTER_MS, end_ms - 1, site, devices)
    outer = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"
    limit = int(max_power_w * QUARTER_MS / 3600)  # mWh in 15 min at max power
    q = (f"SELECT sum(d) AS s FROM (SELECT non_negative_difference(last(energy_last)) AS d, "
         f"elapsed(last(energy_last), 15m) AS e FROM {table(db, RP_1M)} WHERE {where} GROUP BY time(15m), device) "
         f"WHERE {outer} AND e = 1 AND d <= {limit} GROUP BY time(15m) fill(none)")
    series = await influx.query(q, db=db, params=params)
    best: tuple[float, int] | None = None
    for s in series:
        for t, total in s.values:
            if total is not None and (best is None or total > best[0]):
                best = (float(total), int(t))
    if best is None:
        return None, None
    return round(best[0] / 1e6 * 4, 3), local_iso(best[1], tz)


# --- sites, groups and devices from the energy series -----------------------------------------------------------


def _series_where(start_ms: int, end_ms: int, site: str | None, devices: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``site = $site`` or ``(device = $d0 OR ...)`` plus the time range; ids are bound parameters."""
    params: dict[str, str] = {}
    if devices and all(is_device_id(d) for d in devices):
        # A regex over validated hex ids (safe to inline): InfluxDB 1.x plans a long OR of tag equalities
        # much more slowly (measured: 100 devices, year of daily points, 450 ms with the OR chain).
        scope = f"device =~ /^({'|'.join(sorted(set(devices)))})$/"
    elif devices:
        ors = []
        for i, d in enumerate(devices):
            params[f"d{i}"] = d
            ors.append(f"device = $d{i}")
        scope = "(" + " OR ".join(ors) + ")"
    elif site:
        params["site"] = site
        scope = "site = $site"
    else:
        raise ValueError("site or devices required")
    return f"{scope} AND time >= {int(start_ms)}ms AND time < {int(end_ms)}ms", params


async def _no_series() -> list[Series]:
    return []


async def series_consumption(
    influx: InfluxClient,
    db: str,
    start_ms: int,
    end_ms: int,
    granularity: Granularity,
    *,
    site: str | None = None,
    devices: Sequence[str] = (),
    with_peak: bool = True,
    tz: ZoneInfo = TZ,
    register: Register = "import",
) -> Consumption:
    """Consumption of a whole site, or of a device list (a device, a group), from the energy series (with
    ``register="export"`` the exported energy, field ``exp``, in the same shape; no peak).

    A site reads its own series: 15-min buckets ``r1m.site_energy``, hour buckets ``r1h.site_energy``,
    day/week/month buckets the hourly series folded into local days inside InfluxDB. A device list sums its
    devices' series inside InfluxDB: 15-min and hour buckets from ``r1m.energy_q`` (``GROUP BY time(15m|1h)``),
    day/week/month buckets from the daily ``r1h.energy_d`` (local days; ``energy_q`` folded into local days when
    the range does not start and end at local midnights). Peak demand (up to ``PEAK_MAX_SPAN_MS``) is the largest
    15-min sum over the scope not touched by a gap (``est``), as :func:`peak_demand` computes it from the
    devices' intervals: the peak of the sum, not the sum of the peaks.
    """
    edges = bucket_edges(start_ms, end_ms, granularity, tz)
    n = len(edges) - 1
    total, est = [0.0] * n, [False] * n
    counts = {"resets": 0, "spikes": 0, "jumps": 0}
    where, params = _series_where(start_ms, end_ms, site, devices)
    col = "mwh" if register == "import" else "exp"
    with_peak = with_peak and register == "import"
    agg = f"sum({col}), max(est), sum(resets), sum(spikes), sum(jumps)"
    local_days = "GROUP BY time(1d) fill(none) tz('America/Sao_Paulo')"
    quarters: list[tuple[int, float, bool]] = []
    if devices:
        q_tab = table(db, RP_1M, ENERGY_Q)
        if granularity in ("15min", "hour"):
            step = "15m" if granularity == "15min" else "1h"
            q = f"SELECT {agg} FROM {q_tab} WHERE {where} GROUP BY time({step}) fill(none)"
        else:
            days = bucket_edges(start_ms, end_ms, "day", tz)
            # The daily series holds whole local days only: a range that cuts a day must fold the quarters
            # itself, or the cut day would be counted whole.
            src = table(db, RP_1H, ENERGY_D) if days[0] == start_ms and days[-1] == end_ms else q_tab
            q = f"SELECT {agg} FROM {src} WHERE {where} {local_days}"
    elif granularity in ("15min", "hour"):
        rp = RP_1M if granularity == "15min" else RP_1H
        q = f"SELECT {col}, est, resets, spikes, jumps FROM {table(db, rp, SITE_ENERGY)} WHERE {where}"
    else:
        q = f"SELECT {agg} FROM {table(db, RP_1H, SITE_ENERGY)} WHERE {where} {local_days}"
    # Gap points sit at the gap's end (that is when the gap becomes known), so a gap that starts inside the range
    # may be stored up to LOOK_MS after it: look that far ahead and keep those that start before the end.
    gap_where, _ = _series_where(start_ms, end_ms + LOOK_MS, site, devices)
    gap_where = gap_where.replace(f"time >= {int(start_ms)}ms", f"time > {int(start_ms)}ms")
    peak_q = None
    if with_peak and end_ms - start_ms <= PEAK_MAX_SPAN_MS and granularity != "15min":
        # 15-min buckets collect their quarters below; otherwise read them once more: the peak is a 15-min
        # quantity whatever the bucket size.
        peak_q = (f"SELECT sum(mwh), max(est) FROM {table(db, RP_1M, ENERGY_Q)} WHERE {where} "
                  "GROUP BY time(15m) fill(none)" if devices else
                  f"SELECT max(mwh) FROM {table(db, RP_1M, SITE_ENERGY)} WHERE {where} AND est = 0")
    # The energy, its gaps and the peak's quarters are independent reads: one round trip's time, not three.
    energy, gap_rows, peak_rows = await asyncio.gather(
        influx.query(q, db=db, params=params),
        influx.query(f"SELECT t0_ms FROM {table(db, RP_1M, ENERGY_GAP)} WHERE {gap_where} AND t0_ms < {int(end_ms)}",
                     db=db, params=params),
        influx.query(peak_q, db=db, params=params) if peak_q else _no_series())
    for s in energy:
        for t, mwh, e, r, sp, j in s.values:
            if mwh is None:
                continue
            i = bisect.bisect_right(edges, int(t)) - 1
            if 0 <= i < n:
                total[i] += float(mwh)
                est[i] = est[i] or bool(e)
            if granularity == "15min":
                quarters.append((int(t), float(mwh), bool(e)))
            counts["resets"] += int(r or 0)
            counts["spikes"] += int(sp or 0)
            counts["jumps"] += int(j or 0)
    gaps = sorted((int(t0), int(t1)) for s in gap_rows for t1, t0 in s.values if t0 is not None)
    peak_kw: float | None = None
    peak_at: str | None = None
    if peak_q is not None:  # a site's peak query reads only quarters not touched by a gap (no est column)
        quarters = [(int(v[0]), float(v[1]), bool(v[2]) if devices else False)
                    for s in peak_rows for v in s.values if v[1] is not None]
    if with_peak and end_ms - start_ms <= PEAK_MAX_SPAN_MS:
        best: tuple[float, int] | None = None
        for t, m, e in quarters:
            if not e and (best is None or m > best[0]):
                best = (m, t)
        if best is not None:
            peak_kw, peak_at = round(best[0] / 1e6 * 4, 3), local_iso(best[1], tz)
    buckets = [Bucket(start=local_iso(edges[i], tz), start_ms=edges[i], end_ms=edges[i + 1],
                      kwh=round(total[i] / 1e6, 6), estimated=est[i]) for i in range(n)]
    return Consumption(granularity=granularity, buckets=buckets, kwh_total=round(sum(total) / 1e6, 6),
                       peak_kw=peak_kw, peak_at=peak_at, resets=counts["resets"], spikes=counts["spikes"],
                       jumps=counts["jumps"], gaps=[(local_iso(a, tz), local_iso(b, tz)) for a, b in gaps])
