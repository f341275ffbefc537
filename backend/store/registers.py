"""kWh per hour/day/week/month and peak demand from cumulative energy registers.

The meters report a cumulative register (``energy_mwh``, integer mWh, kept in EEPROM). Consumption is the
difference of consecutive register values — never power integrated over time — so a gap in the data loses no
energy: the delta across the gap is the exact energy, only its distribution in time is unknown (it is spread
evenly over the gap and the buckets are flagged ``estimated``).

Anomalies (a register going backwards, or a jump implying more power than ``max_power_w``) are held until the
next sample decides what they were:

* the next sample continues from the *previous* good value -> the anomaly was a **spike**: dropped;
* the next sample continues from the anomaly -> a **reset** (register restarted from 0: its new value is the
  energy since the reset) or a **level jump** (register rewritten upward: the jump itself counts as 0);
* a new boot counter with a lower value is a reset straight away (the boot counter makes it unambiguous).

Calendar buckets are in America/Sao_Paulo local time via zoneinfo (historic DST days have 23 or 25 hours).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from typing import Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from protocol.timebase import DAY_MS, HOUR_MS, MINUTE_MS, QUARTER_MS, TZ

Granularity = Literal["15min", "hour", "day", "week", "month"]
GRANULARITIES: Final = ("15min", "hour", "day", "week", "month")


class Sample(NamedTuple):
    ts_ms: int
    energy_mwh: int
    boot: int = -1
    """Boot counter, or -1 when unknown (rollups)."""
    reset_mwh: int = -1
    """What a reset at this sample counts, when the raw readings already decided it (a rollup's boot edge: there
    the step took seconds, not the window's width the plausibility check would judge it over); -1 = judge here."""


class Interval(NamedTuple):
    t0: int
    t1: int
    mwh: int
    gap: bool


class RegisterStats(msgspec.Struct):
    samples: int = 0
    resets: int = 0
    spikes: int = 0
    jumps: int = 0
    gaps: list[tuple[int, int]] = msgspec.field(default_factory=list)


def _plausible(a: Sample, b: Sample, max_power_w: float, min_dt_ms: int = 1_000) -> bool:
    delta = b.energy_mwh - a.energy_mwh
    if delta < 0:
        return False
    dt_ms = max(b.ts_ms - a.ts_ms, min_dt_ms)
    return delta * 3600 / dt_ms <= max_power_w  # mWh over ms -> W


def register_intervals(
    samples: Iterable[Sample], *, max_power_w: float = 50_000.0, gap_ms: int = 15 * 60_000, min_dt_ms: int = 1_000,
    events: list[tuple[int, str]] | None = None, known_gaps: Collection[tuple[int, int]] = (),
) -> tuple[list[Interval], RegisterStats]:
    """Consecutive register samples -> energy intervals, with resets, spikes and gaps handled (see module doc).

    ``min_dt_ms`` floors the time used in the power plausibility check: with rollups the step from one window's
    last value to the next window's first happened somewhere within a window, not in the 1 ms between the
    sample times, so it is judged over a window width. ``events``, when given, receives ``(ts_ms, kind)`` per
    counted anomaly (kind ``reset``/``spike``/``jump``; ts is the anomalous sample's time), so a caller can
    attribute the counts to time buckets (backend/energy_series.py). ``known_gaps`` are sample pairs
    ``(t0, t1)`` that are gaps whatever ``gap_ms`` says (found at a finer resolution than the samples').
    """

    def event(ts: int, kind: str) -> None:
        if events is not None:
            events.append((ts, kind))

    ordered = sorted(samples, key=lambda s: s.ts_ms)
    stats = RegisterStats()
    out: list[Interval] = []
    base: Sample | None = None
    pending: Sample | None = None

    def emit(a: Sample, b: Sample, mwh: int) -> None:
        gap = b.ts_ms - a.ts_ms > gap_ms or (a.ts_ms, b.ts_ms) in known_gaps
        if gap:
            stats.gaps.append((a.ts_ms, b.ts_ms))
            # The one gap rule (docs/analytics.md): from the minute of the last reading before the gap to the
            # minute of the first reading after it (both ends rounded down to the minute), the finest edges the
            # 1-minute rollups still know, so raw readings, the energy series and the 1-hour rollups spread a gap
            # alike.
            out.append(Interval(a.ts_ms - a.ts_ms % MINUTE_MS, b.ts_ms - b.ts_ms % MINUTE_MS, max(mwh, 0), True))
        else:
            out.append(Interval(a.ts_ms, b.ts_ms, max(mwh, 0), False))

    def accept_reset(a: Sample, b: Sample) -> None:
        # Register restarted from zero: b's value is what was consumed since the reset (if plausible).
        stats.resets += 1
        event(b.ts_ms, "reset")
        zero = Sample(a.ts_ms, 0, a.boot)
        if b.reset_mwh >= 0:
            emit(a, b, b.reset_mwh)
        else:
            emit(a, b, b.energy_mwh if _plausible(zero, b, max_power_w, min_dt_ms) else 0)

    for s in ordered:
        stats.samples += 1
        if base is None:
            base = s
            continue
        if s.ts_ms == base.ts_ms:
            continue
        if pending is None:
            if _plausible(base, s, max_power_w, min_dt_ms):
                emit(base, s, s.energy_mwh - base.energy_mwh)
                base = s
            elif s.boot != base.boot and s.boot >= 0 and base.boot >= 0 and s.energy_mwh < base.energy_mwh:
                accept_reset(base, s)
                base = s
            else:
                pending = s
            continue
        if _plausible(base, s, max_power_w, min_dt_ms):
            stats.spikes += 1  # the pending sample was off; s continues the good series
            event(pending.ts_ms, "spike")
            emit(base, s, s.energy_mwh - base.energy_mwh)
            base, pending = s, None
        elif _plausible(pending, s, max_power_w, min_dt_ms):
            if pending.energy_mwh < base.energy_mwh:
                accept_reset(base, pending)
            else:
                stats.jumps += 1
                event(pending.ts_ms, "jump")
                emit(base, pending, 0)
            emit(pending, s, s.energy_mwh - pending.energy_mwh)
            base, pending = s, None
        else:
            stats.spikes += 1
            event(pending.ts_ms, "spike")
            pending = s
    if pending is not None:
        stats.spikes += 1  # unconfirmed at the end of the data: not counted (it will be, once confirmed)
        event(pending.ts_ms, "spike")
    return out, stats


def _local_midnight(day: dt.date, tz: ZoneInfo) -> int:
    # fold=0 on a nonexistent midnight (DST started at 00:00) gives the first real instant of that day.
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def bucket_edges(start_ms: int, end_ms: int, granularity: Granularity, tz: ZoneInfo = TZ) -> list[int]:
    """Bucket boundaries covering ``[start_ms, end_ms)``, aligned to the local calendar."""
    if end_ms <= start_ms:
        return [start_ms]
    if granularity in ("15min", "hour"):
        step = QUARTER_MS if granularity == "15min" else HOUR_MS
        first = start_ms - start_ms % step
        edges = list(range(first, end_ms, step))
        edges.append(edges[-1] + step)
        return edges
    local = dt.datetime.fromtimestamp(start_ms / 1000, tz).date()
    if granularity == "week":
        local -= dt.timedelta(days=local.weekday())
    elif granularity == "month":
        local = local.replace(day=1)
    edges = [_local_midnight(local, tz)]
    while edges[-1] < end_ms:
        if granularity == "day":
            local += dt.timedelta(days=1)
        elif granularity == "week":
            local += dt.timedelta(days=7)
        else:
            local = (local + dt.timedelta(days=32)).replace(day=1)
        edges.append(_local_midnight(local, tz))
    return edges


def allocate(intervals: Sequence[Interval], edges: Sequence[int]) -> tuple[list[float], list[bool]]:
    """Spread each interval's mWh evenly over its duration into the buckets; returns (mWh, estimated) per bucket."""
    n = len(edges) - 1
    mwh = [0.0] * max(n, 0)
    est = [False] * max(n, 0)
    if n <= 0:
        return mwh, est
    lo_edge, hi_edge = edges[0], edges[-1]
    for t0, t1, energy, gap in intervals:
        if t1 <= lo_edge or t0 >= hi_edge or (energy == 0 and not gap):
            continue
        span = t1 - t0
        i = max(bisect.bisect_right(edges, t0) - 1, 0)
        while i < n and edges[i] < t1:
            a, b = max(t0, edges[i]), min(t1, edges[i + 1])
            if b > a:
                mwh[i] += energy * (b - a) / span
                if gap:
                    est[i] = True
            i += 1
    return mwh, est


class Bucket(msgspec.Struct, frozen=True):
    start: str
    """Local start time, ISO 8601 with offset (e.g. ``2026-05-01T00:00:00-03:00``)."""
    start_ms: int
    end_ms: int
    kwh: float
    estimated: bool = False
    """Part of this bucket's energy was spread over a data gap."""
    injecao_kwh: float | None = None
    """Sites with generation: energy exported to the grid (the export register), else None."""
    liquido_kwh: float | None = None
    """Consumption minus injection (negative when the site exported more than it drew)."""
    geracao_kwh: float | None = None
    """Sites with a generation meter: what it measured."""
    autoconsumo: float | None = None
    """(generation − injection) / generation: the share of the generation used on site (None without generation)."""


class Consumption(msgspec.Struct, frozen=True):
    granularity: str
    buckets: list[Bucket]
    kwh_total: float
    peak_kw: float | None
    peak_at: str | None
    resets: int
    spikes: int
    jumps: int
    gaps: list[tuple[str, str]]
    injecao_kwh: float | None = None
    """Totals of the bucket fields of the same names (backend/analytics/generation.py)."""
    liquido_kwh: float | None = None
    geracao_kwh: float | None = None
    autoconsumo: float | None = None


def local_iso(ms: int, tz: ZoneInfo = TZ) -> str:
    """``ms`` as local ISO 8601 with its offset, as buckets and gaps are shown."""
    return dt.datetime.fromtimestamp(ms / 1000, tz).isoformat()


def peak_demand(intervals: Sequence[Interval], start_ms: int, end_ms: int, tz: ZoneInfo = TZ) -> tuple[
        float | None, int | None]:
    """Highest average power (kW) over a clock-aligned 15-min window, as ANEEL measures demand.

    Windows touched by a data gap are skipped: the gap's energy is spread evenly, so its mean is not a demand.
    """
    edges = bucket_edges(start_ms, end_ms, "15min", tz)
    mwh, est = allocate(intervals, edges)
    best: tuple[float, int] | None = None
    for i, e in enumerate(mwh):
        if est[i] or edges[i] < start_ms or edges[i + 1] > end_ms:
            continue
        kw = e / 1e6 * 4
        if best is None or kw > best[0]:
            best = (kw, edges[i])
    return (round(best[0], 3), best[1]) if best else (None, None)


def consumption(
    samples_by_device: Iterable[Iterable[Sample]],
    start_ms: int,
    end_ms: int,
    granularity: Granularity,
    *,
    tz: ZoneInfo = TZ,
    max_power_w: float = 50_000.0,
    gap_ms: int = 15 * 60_000,
    min_dt_ms: int = 1_000,
    with_peak: bool = True,
    known_gaps: Collection[tuple[int, int]] = (),
) -> Consumption:
    """Sum of several devices' consumption (one device, a group or a site) in calendar buckets (``known_gaps``:
    see :func:`register_intervals`)."""
    edges = bucket_edges(start_ms, end_ms, granularity, tz)
    total = [0.0] * (len(edges) - 1)
    est = [False] * (len(edges) - 1)
    all_intervals: list[Interval] = []
    resets = spikes = jumps = 0
    gaps: list[tuple[str, str]] = []
    for samples in samples_by_device:
        intervals, st = register_intervals(samples, max_power_w=max_power_w, gap_ms=gap_ms, min_dt_ms=min_dt_ms,
                                           known_gaps=known_gaps)
        resets, spikes, jumps = resets + st.resets, spikes + st.spikes, jumps + st.jumps
        gaps.extend((local_iso(a, tz), local_iso(b, tz)) for a, b in st.gaps)
        mwh, e = allocate(intervals, edges)
        for i in range(len(total)):
            total[i] += mwh[i]
            est[i] = est[i] or e[i]
        all_intervals.extend(intervals)
    buckets = [
        Bucket(start=local_iso(edges[i], tz),
               start_ms=edges[i], end_ms=edges[i + 1], kwh=round(total[i] / 1e6, 6), estimated=est[i])
        for i in range(len(total))
    ]
    peak_kw, peak_at = peak_demand(all_intervals, start_ms, end_ms, tz) if with_peak else (None, None)
    # Peak of the sum, not the sum of peaks: merge all devices' intervals into one allocation.
    return Consumption(
        granularity=granularity, buckets=buckets, kwh_total=round(sum(total) / 1e6, 6), peak_kw=peak_kw,
        peak_at=local_iso(peak_at, tz) if peak_at is not None else None, resets=resets, spikes=spikes, jumps=jumps,
        gaps=gaps,
    )


Resolution = Literal["raw", "r1m", "r1h"]
"""Where register samples come from: raw readings, the 1-minute or the 1-hour rollup."""
WINDOW_MS: Final = {"raw": 0, "r1m": MINUTE_MS, "r1h": HOUR_MS}


def choose_resolution(start_ms: int, end_ms: int, granularity: Granularity) -> Resolution:
    """Raw readings for up to 2 days at 15 min/1 h; the 1-min rollup for 15-min buckets; the 1-hour rollup
    otherwise (hour, day, week and month buckets all fall on hour boundaries, so hourly registers are exact)."""
    span = end_ms - start_ms
    if span <= 2 * DAY_MS and granularity in ("15min", "hour"):
        return "raw"
    if granularity == "15min":
        return "r1m"
    return "r1h"


def gap_for(resolution: Resolution) -> int:
    return max(15 * 60_000, 2 * WINDOW_MS[resolution])


def min_dt_for(resolution: Resolution) -> int:
    return max(1_000, WINDOW_MS[resolution])


def window_samples(t: int, first: int | None, last: int | None, bmin: int | None, bmax: int | None,
                   emax: int | None, width: int, pre: int | None = None, post: int | None = None,
                   reset: int | None = None) -> list[Sample]:
    """One rollup window (start ``t``, ``width`` ms) as register samples: ``energy_first`` at the start (with
    ``boot_min``), ``energy_last`` just before the end (with ``boot_max``), and in between what is known of a reset.

    * A reboot inside the window (``boot_min != boot_max``) with its edge known (``pre``: the register just
      before the newest boot's first reading, ``post``: that reading; written by the rollup worker) becomes both
      values mid-window, so the energy on each side of it is kept: a step back (a register restarted from its last
      EEPROM save) costs nothing but the step itself, as on the raw readings; ``reset`` is what the step counts
      if it is a reset, as the raw readings decided it (:func:`edge_reset`).
    * A window whose one boot began with its first reading carries the verdict on its first sample (the step is
      from the previous window).
    * Otherwise (a reset within one boot, or a rollup written before the edge fields existed), ``energy_max``
      mid-window when the window contains a reset: the register just before it, so the energy before it is kept.

    The times inside the window are unknown; the samples only need the right order. No sample for a window
    without register values."""
    if first is None or last is None:
        return []
    b0 = int(bmin) if bmin is not None else -1
    b1 = int(bmax) if bmax is not None else -1
    verdict = int(reset) if reset is not None and pre is not None and post is not None else -1
    # One boot with an edge: the boot began with the window's first reading, so the verdict is that sample's.
    out = [Sample(int(t), int(first), b0, verdict if b0 == b1 else -1)]
    if pre is not None and post is not None and b0 != b1:
        # 1 ms apart, as the reboot is one step: a reset's plausibility is then judged over the window's floor
        # (min_dt_ms), not over half a window.
        out.append(Sample(int(t) + width // 2 - 1, int(pre), b0))
        out.append(Sample(int(t) + width // 2, int(post), b1, verdict))
    elif emax is not None and (last < first or b0 != b1) and emax > first:
        out.append(Sample(int(t) + width // 2, int(emax), b0))
    out.append(Sample(int(t) + width - 1, int(last), b1))
    return out


def edge_reset(before: Sample, at: Sample, max_power_w: float) -> int:
    """What the step from ``before`` to ``at`` (consecutive raw readings across a boot change) counts if
    :func:`register_intervals` takes it for a reset: ``at``'s value when plausible from zero, else 0 (a step
    back). Stored with the rollup's boot edge, so the rollups decide it as the raw readings do."""
    return at.energy_mwh if _plausible(Sample(before.ts_ms, 0, before.boot), at, max_power_w) else 0
