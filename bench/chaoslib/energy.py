"""Each meter's energy from its register against the consumption API (``GET /api/v1/analytics/consumo``).

The expected figure follows the documented register rule (docs/analytics.md, backend/store/registers.py): the
energy is the sum of the differences between consecutive register values in time order, and a step back — a
reset whose register restarted from its last EEPROM save — counts as zero, because what the register lost it never
counted. It is computed from the stored readings, which the reconciliation has just compared with what the meters
produced; with none lost that is the meters' own register history. For a meter that never stepped back it is
simply the register's last value minus its first.

The API is asked for the whole local days of the run, at three granularities, which take three different paths
through the backend (docs/analytics.md "Source"): ``15min`` and ``hour`` from the raw readings (spans up to two
days), ``day`` from the energy series the rollup worker keeps (``energy_d``, computed from the 1-minute rollups).
Before asking, :func:`wait_rollups` waits until a rollup pass started after the drain, so the series cover every
reading.

A known defect has a signature here (issue 11, "Day energy low after a step-back reboot"): a 1-minute rollup
window keeps ``energy_first``, ``energy_last``, ``energy_min`` and ``energy_max``, but ``window_samples``
(backend/store/registers.py, committed version) turns a window into samples without ``energy_min``, the new boot's
first value. A step back inside a window then costs the series the smaller of two amounts: what the new boot
registered within that minute (while the register stays below its value before the reset, the window's end looks
like a register restarted from zero and counts 0), or the step itself (once it climbs past that value,
``energy_max`` is the new boot's and the window counts only last - first). :func:`reset_minute_loss` computes that
per meter, so a ``day`` mismatch equal to it is recognisable.

Tolerance: :data:`TOLERANCE_MWH`. The API rounds ``kwh_total`` once, to 1e-6 kWh (0.5 mWh), from an unrounded
sum, and the series store float mWh per quarter without rounding, so nothing accumulates per bucket or per reset:
1 mWh covers the rounding and the float sums. A reset that the analytics mishandles costs far more than that
(up to a minute of the meter's energy).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Final, NamedTuple

import httpx

from backend.store.layout import RP_MARKS, STATE
from devstack.influxdb import InfluxError, InfluxService
from protocol.timebase import TZ

from .reconcile import Point

GRANULARITIES: Final = ("15min", "hour", "day")
TOLERANCE_MWH: Final = 1.0


class EnergyResult(NamedTuple):
    scope: str
    """A device id, or ``site:<id>`` for the whole site."""
    expected_mwh: int
    step_backs: int
    api_mwh: dict[str, float | None]
    """Granularity -> the API's ``kwh_total`` in mWh (None when the request failed)."""
    reset_minute_mwh: int
    """What a rollup window without ``energy_min`` loses at this scope's step backs (:func:`reset_minute_loss`)."""

    def mismatches(self) -> dict[str, float | None]:
        """Granularity -> API minus expected, mWh, where beyond the tolerance (None: no answer)."""
        return {g: None if v is None else round(v - self.expected_mwh, 3) for g, v in self.api_mwh.items()
                if v is None or abs(v - self.expected_mwh) > TOLERANCE_MWH}


def register_energy(points: list[Point]) -> tuple[int, int]:
    """(mWh by the register rule, step backs) of one meter's readings."""
    ordered = sorted(points, key=lambda q: q.ts)
    total = steps = 0
    for a, b in itertools.pairwise(ordered):
        delta = int(b.values["energy_mwh"]) - int(a.values["energy_mwh"])
        if delta < 0:
            steps += 1
        else:
            total += delta
    return total, steps


def reset_minute_loss(points: list[Point]) -> int:
    """mWh a rollup window without ``energy_min`` loses at each step back inside a clock minute (see the module
    doc): min(what the new boot registered in that minute, the step)."""
    ordered = sorted(points, key=lambda q: q.ts)
    total = 0
    for a, b in itertools.pairwise(ordered):
        minute = b.ts // 60_000
        before, after = int(a.values["energy_mwh"]), int(b.values["energy_mwh"])
        if after < before and a.ts // 60_000 == minute:
            tail = [q for q in ordered if q.ts // 60_000 == minute and q.boot == b.boot and q.ts >= b.ts]
            total += min(int(tail[-1].values["energy_mwh"]) - after, before - after)
    return total


def wait_rollups(influx: InfluxService, db: str, after_ms: int, timeout: float) -> bool:
    """True once the rollup worker stored a watermark past ``after_ms`` (a pass that saw every dirty mark)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = influx.rows(f'SELECT last("watermark_ns") FROM "{db}"."{RP_MARKS}"."{STATE}"', db=db)
        except InfluxError:
            rows = []
        if rows and rows[0].get("last") is not None and int(rows[0]["last"]) // 1_000_000 > after_ms:
            return True
        time.sleep(1.0)
    return False


def _local_day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, TZ).date().isoformat()


def check_energy(api: str, token: Callable[[], str], site: str, points: dict[str, list[Point]],
                 devices: list[str]) -> list[EnergyResult]:
    """Per device, then the whole site, at every granularity of :data:`GRANULARITIES`."""
    every = [q.ts for d in devices for q in points.get(d, [])]
    if not every:
        return []
    days = {"inicio": _local_day(min(every)), "fim": _local_day(max(every))}
    headers = {"Authorization": f"Bearer {token()}"}
    out = []
    scopes = [(d, {"device": d}) for d in devices] + [(f"site:{site}", {"site": site})]
    site_total = site_steps = site_loss = 0
    with httpx.Client(base_url=api, headers=headers, timeout=60.0) as client:
        for name, param in scopes:
            if name.startswith("site:"):
                expected, steps, loss = site_total, site_steps, site_loss
            else:
                expected, steps = register_energy(points.get(name, []))
                loss = reset_minute_loss(points.get(name, []))
                site_total, site_steps, site_loss = site_total + expected, site_steps + steps, site_loss + loss
            api_mwh: dict[str, float | None] = {}
            for g in GRANULARITIES:
                r = client.get("/api/v1/analytics/consumo", params={**param, **days, "granularidade": g})
                api_mwh[g] = round(float(r.json()["kwh_total"]) * 1e6, 3) if r.status_code == 200 else None
            out.append(EnergyResult(name, expected, steps, api_mwh, loss))
    return out
