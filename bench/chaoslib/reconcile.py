"""Every reading the meters produced against what InfluxDB holds, reading by reading.

A reading is identified for life by (device, boot, seq), which the backend stores as fields of the point; InfluxDB
keys the point by device and timestamp. So for each produced reading the check finds its points by (boot, seq):

- **stored**: exactly one point, every field equal to what the meter sent (the MQTT form of its frame:
  ``protocol.mqtt.reading_from_frame``; flags compared without RESENT, which only says how it travelled);
- **excused**: no point, and the meter's own ground truth says a correct chain may never store it (dropped from
  its full queue, lost in its RAM at a reset before any ACK, unacknowledged when it was cut off);
- **lost**: no point and no excuse. The diagnosis says where it vanished: overwritten by another reading stamped
  with the same millisecond, carried by the broker but never stored, or never published at all;
- **duplicated**: more than one point (the same reading stamped with two timestamps);
- **differing**: a field differs;
- **phantom**: a point of this site no meter produced (before its cut-off).

It also measures, per stored reading, the delay from production to the receipt that confirmed it (the tap), how
many times it crossed the broker, and how far the gateway's timestamp is from the moment it was measured.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any, Final, NamedTuple

from devstack.influxdb import InfluxService
from protocol import frames, mqtt

from .tap import Reading, TapView
from .truth import MeterRecord, Produced

FIELDS: Final = ("vrms", "irms", "p", "s", "pf", "freq", "energy_mwh", "flags")
EXAMPLES: Final = 5
"""Keys listed per finding; the counts are always complete."""


class Point(NamedTuple):
    ts: int
    boot: int
    seq: int
    values: dict[str, Any]


def stored_points(influx: InfluxService, db: str, site: str) -> dict[str, list[Point]]:
    """Every raw reading point of ``site``, per device."""
    q = (f'SELECT {", ".join(FIELDS)}, boot, seq FROM "{db}"."raw"."readings" WHERE "site" = \'{site}\' '
         'GROUP BY "device"')
    rows: list[dict[str, Any]] = []
    for _ in range(20):
        rows = influx.rows(q, db=db)
        # InfluxDB 1.x may show one field of a point before another while a write lands: ask again
        if all(r.get(f) is not None for r in rows for f in (*FIELDS, "boot", "seq")):
            break
        time.sleep(0.1)
    out: dict[str, list[Point]] = {}
    for r in rows:
        if r.get("boot") is None or r.get("seq") is None:
            continue
        out.setdefault(r["device"], []).append(Point(int(r["time"]), int(r["boot"]), int(r["seq"]),
                                                     {f: r.get(f) for f in FIELDS}))
    return out


def expected_values(device: str, p: Produced) -> dict[str, Any]:
    r = mqtt.reading_from_frame(device, p.boot, p.t_ms, p.frame)
    return {"vrms": r.vrms, "irms": r.irms, "p": r.p, "s": r.s, "pf": r.pf, "freq": r.freq,
            "energy_mwh": r.energy_mwh, "flags": r.flags & ~frames.FLAG_RESENT}


class DeviceResult(NamedTuple):
    device: str
    firmware: bool
    boots: int
    produced: int
    stored: int
    excused: dict[str, int]
    """Reason -> readings."""
    meter_dropped: int
    lost: list[str]
    """``boot/seq: diagnosis``, first :data:`EXAMPLES`; ``lost_count`` has them all."""
    lost_count: int
    duplicated: list[str]
    duplicated_count: int
    differing: list[str]
    differing_count: int
    phantom: list[str]
    phantom_count: int


class Figures(NamedTuple):
    """Run-wide figures of the stored readings."""

    delay_max_s: float | None
    delay_p50_s: float | None
    delay_p99_s: float | None
    delay_measured: int
    """Stored readings whose confirming receipt the tap saw."""
    carried_mean: float
    carried_max: int
    carried_again: int
    """Stored readings that crossed the broker more than once."""
    ts_offset_max_s: float
    ts_offset_p99_s: float


def _lost_diagnosis(device: str, p: Produced, points: list[Point], stamped: dict[Reading, int],
                    carried: Counter[Reading]) -> str:
    key = (device, p.boot, p.seq)
    ts = stamped.get(key)
    if ts is not None:
        other = next((q for q in points if q.ts == ts), None)
        if other is not None:
            return f"{p.boot}/{p.seq}: its point (ts {ts}) holds {other.boot}/{other.seq} (same millisecond)"
    if carried[key]:
        return f"{p.boot}/{p.seq}: crossed the broker {carried[key]}x, never stored"
    return f"{p.boot}/{p.seq}: never seen on the broker (lost between the meter and MQTT)"


def reconcile_device(record: MeterRecord, points: list[Point], stamped: dict[Reading, int],
                     carried: Counter[Reading]) -> DeviceResult:
    by_key: dict[tuple[int, int], list[Point]] = {}
    for q in points:
        by_key.setdefault((q.boot, q.seq), []).append(q)
    budget = dict(record.dropped_budget)
    excused: Counter[str] = Counter()
    lost, dup, diff = [], [], []
    stored = 0
    for p in record.produced:
        key = (p.boot, p.seq)
        found = by_key.get(key, [])
        if not found:
            if key in record.excused:
                excused[record.excused[key]] += 1
            elif budget.get(p.boot, 0) > 0:
                budget[p.boot] -= 1
                excused["dropped at the meter (counted in its STATUS)"] += 1
            else:
                lost.append(_lost_diagnosis(record.device, p, points, stamped, carried))
            continue
        stored += 1
        if len(found) > 1:
            dup.append(f"{p.boot}/{p.seq}: {len(found)} points at ts {sorted(q.ts for q in found)}")
        want = expected_values(record.device, p)
        for q in found:
            got = dict(q.values, flags=int(q.values["flags"]) & ~frames.FLAG_RESENT)
            bad = [f"{f} {got[f]!r} != {want[f]!r}" for f in FIELDS if got[f] != want[f]]
            if bad:
                diff.append(f"{p.boot}/{p.seq}: {', '.join(bad)}")
    produced_keys = {(p.boot, p.seq) for p in record.produced}
    phantom = [f"{b}/{s}" for (b, s) in sorted(by_key) if (b, s) not in produced_keys]
    return DeviceResult(record.device, record.firmware, record.boots, len(record.produced), stored, dict(excused),
                        record.meter_dropped, lost[:EXAMPLES], len(lost), dup[:EXAMPLES], len(dup),
                        diff[:EXAMPLES], len(diff), phantom[:EXAMPLES], len(phantom))


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] if len(values) > 1 else values[0]


def figures(records: list[MeterRecord], points: dict[str, list[Point]], carried: Counter[Reading],
            confirmed_ms: dict[Reading, int]) -> Figures:
    delays, offsets, hops = [], [], []
    for record in records:
        by_key = {(q.boot, q.seq): q for q in points.get(record.device, [])}
        for p in record.produced:
            q = by_key.get((p.boot, p.seq))
            if q is None:
                continue
            key = (record.device, p.boot, p.seq)
            offsets.append(abs(q.ts - p.t_ms) / 1000)
            hops.append(carried[key])
            if key in confirmed_ms:
                delays.append((confirmed_ms[key] - p.t_ms) / 1000)
    return Figures(
        delay_max_s=round(max(delays), 2) if delays else None,
        delay_p50_s=round(_quantile(delays, 0.5), 2) if delays else None,
        delay_p99_s=round(_quantile(delays, 0.99), 2) if delays else None,
        delay_measured=len(delays),
        carried_mean=round(statistics.fmean(hops), 3) if hops else 0.0,
        carried_max=max(hops, default=0),
        carried_again=sum(1 for h in hops if h > 1),
        ts_offset_max_s=round(max(offsets, default=0.0), 3),
        ts_offset_p99_s=round(_quantile(offsets, 0.99), 3) if offsets else 0.0,
    )


def reconcile(influx: InfluxService, db: str, site: str, records: list[MeterRecord],
              tap: TapView) -> tuple[list[DeviceResult], Figures, dict[str, list[Point]]]:
    """Per-device results, run-wide figures, and the points (the energy check reads them too).

    Raises :class:`devstack.influxdb.InfluxError` when InfluxDB does not answer."""
    carried, stamped, confirmed = tap
    points = stored_points(influx, db, site)
    results = [reconcile_device(r, points.get(r.device, []), stamped, carried) for r in records]
    known = {r.device for r in records}
    for device in sorted(set(points) - known):  # a device no meter of the run is: all of it is phantom
        pts = points[device]
        results.append(DeviceResult(device, False, 0, 0, 0, {}, 0, [], 0, [], 0, [], 0,
                                    [f"{q.boot}/{q.seq}" for q in pts[:EXAMPLES]], len(pts)))
    return results, figures(records, points, carried, confirmed), points

