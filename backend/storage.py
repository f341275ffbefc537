"""InfluxDB layout of CDS and the one write path for readings.

Database ``settings.influx_db`` holds four retention policies:

=========  ==============================  =================================================================
RP         measurement                     content
=========  ==============================  =================================================================
``raw``    ``readings``                    one point per reading (backend/lineprotocol.py); the DEFAULT RP
``r1m``    ``readings``                    1-minute rollups per device (backend/rollups.py, ROLLUP_FIELDS)
``r1h``    ``readings``                    1-hour rollups per device, computed from ``r1m``
``marks``  ``rollup_dirty``/``rollup_state``  dirty-window marks of the rollup worker and its watermark (7 d)
``r1m``    ``energy_q``/``site_energy``    15-min energy per device and per site (backend/energy_series.py)
``r1m``    ``energy_gap``                  data gaps per device (at the gap's end)
``r1h``    ``site_energy``                 hourly energy per site
``r1h``    ``energy_d``                    energy per device and local day (backend/energy_series.py)
=========  ==============================  =================================================================

Tags are ``site``, ``gateway``, ``device`` (the site series: ``site`` only); a point is keyed by measurement +
tags + time, so every write here is idempotent (a replayed reading or a recomputed rollup overwrites itself).

:class:`ReadingStore` writes raw readings and, only after InfluxDB accepted them, a dirty mark per time range
and device set, in the same call: the caller acknowledges upstream only after both, so a crash at any point
leaves either a redelivery (which rewrites both) or a mark that the rollup worker will process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Final

from backend.errors import InfluxQueryError
from backend.influx import InfluxClient, quote_ident
from backend.lineprotocol import escape_key, escape_string_field
from backend.settings import Settings

log = logging.getLogger(__name__)

RP_RAW: Final = "raw"
RP_1M: Final = "r1m"
RP_1H: Final = "r1h"
RP_MARKS: Final = "marks"
MARKS_DURATION: Final = "7d"
READINGS: Final = "readings"
DIRTY: Final = "rollup_dirty"
STATE: Final = "rollup_state"
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000


def table(settings: Settings, rp: str, measurement: str = READINGS) -> str:
    """Fully qualified ``"db"."rp"."measurement"`` for InfluxQL."""
    return f"{quote_ident(settings.influx_db)}.{quote_ident(rp)}.{quote_ident(measurement)}"


async def ensure_schema(influx: InfluxClient, settings: Settings) -> None:
    """Create the database and retention policies, or align their durations with the settings. Idempotent and
    safe when several replicas start at once (CREATE on an existing equal object is a no-op in InfluxDB 1.x)."""
    db = quote_ident(settings.influx_db)
    await influx.execute(f"CREATE DATABASE {db}", epoch=None)
    wanted = {RP_RAW: (settings.retention_raw, True), RP_1M: (settings.retention_1m, False),
              RP_1H: (settings.retention_1h, False), RP_MARKS: (MARKS_DURATION, False)}
    rows = await influx.rows(f"SHOW RETENTION POLICIES ON {db}", epoch=None)
    existing = {row["name"]: row for row in rows}
    for name, (duration, default) in wanted.items():
        suffix = " DEFAULT" if default else ""
        if name in existing:
            stmt = f"ALTER RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} REPLICATION 1{suffix}"
        else:
            stmt = f"CREATE RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} REPLICATION 1{suffix}"
        try:
            await influx.execute(stmt, epoch=None)
        except InfluxQueryError as exc:
            if "already exists" not in str(exc):
                raise
            alter = f"ALTER RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} REPLICATION 1{suffix}"
            await influx.execute(alter, epoch=None)
    log.info("influx schema ready", extra={"db": settings.influx_db})


Span = tuple[int, int]
"""Inclusive (first, last) measured timestamps in ms of one device's readings in a write."""


def dirty_mark_lines(spans: Mapping[str, Span], writer: str, now_ns: int) -> list[str]:
    """Dirty marks for the rollup worker: one line per distinct minute range, listing its devices.

    ``start_ms``/``end_ms`` are minute-aligned ms bounds (end exclusive). Devices sharing a range (the common case:
    live data of many meters in the same minute) share one line. Timestamps are unique per writer (``now_ns``
    plus an index) so marks never overwrite each other.
    """
    groups: dict[tuple[int, int], list[str]] = {}
    for device, (first, last) in spans.items():
        start = first - first % MINUTE_MS
        end = last - last % MINUTE_MS + MINUTE_MS
        groups.setdefault((start, end), []).append(device)
    w = escape_key(writer)
    return [
        f"{DIRTY},w={w} start_ms={start}i,end_ms={end}i,"
        f"devices={escape_string_field(','.join(sorted(devs)))} {now_ns + i}"
        for i, ((start, end), devs) in enumerate(sorted(groups.items()))
    ]


class ReadingStore:
    """Writes readings (raw RP) and their dirty marks; the single write path of MQTT and HTTP ingest."""

    def __init__(self, influx: InfluxClient, settings: Settings, writer_id: str = "") -> None:
        self.influx = influx
        self.settings = settings
        self.writer_id = writer_id or f"{settings.resolved_client_id()}-{os.getpid()}"
        self._last_ns = 0

    def _mark_time(self, n: int) -> int:
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now + n
        return now

    async def write(self, lines: Sequence[str], spans: Mapping[str, Span]) -> None:
        """Write ``lines`` (reading lines, ms precision) then the dirty marks for ``spans``.

        Returns only when InfluxDB accepted both; raises InfluxUnavailableError / InfluxRejectedError otherwise.
        """
        if not lines:
            return
        await self.influx.write(lines, self.settings.influx_db, rp=RP_RAW, precision="ms")
        if spans:  # always: the rollup worker may run on another replica
            marks = dirty_mark_lines(spans, self.writer_id, self._mark_time(len(spans)))
            await self.influx.write(marks, self.settings.influx_db, rp=RP_MARKS, precision="ns")
