"""The one write path for readings: raw points first, then the rollup worker's dirty marks.

:class:`ReadingStore` writes raw readings and, only after InfluxDB accepted them, a dirty mark per time range
and device set, in the same call: the caller acknowledges upstream only after both, so a crash at any point
leaves either a redelivery (which rewrites both) or a mark that the rollup worker will process. MQTT ingest and
the HTTP ingest endpoint both write through here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from backend.errors import InfluxRejectedError
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import DIRTY, RP_MARKS, RP_RAW, duration_ms
from backend.store.lineprotocol import escape_key, escape_string_field
from protocol.timebase import MINUTE_MS

RETENTION_MARGIN_MS = MINUTE_MS
"""Readings this close to the raw retention policy's edge are refused too: InfluxDB judges the edge by its own
clock when the write lands, which may be a little later than ours."""


def oldest_storable_ms(settings: Settings, now_ms: int) -> int:
    """The oldest measured time a reading may have to be stored in the raw retention policy (0 = any)."""
    keep = duration_ms(settings.retention_raw)
    return 0 if keep is None else now_ms - keep + RETENTION_MARGIN_MS

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
        A partial write (InfluxDB stored some points and refused others) still gets its marks before the
        refusal is raised, so the points that were stored reach the rollups.
        """
        if not lines:
            return
        try:
            await self.influx.write(lines, self.settings.influx_db, rp=RP_RAW, precision="ms")
        except InfluxRejectedError as exc:
            if "partial write" in exc.body:
                await self.mark(spans)
            raise
        await self.mark(spans)

    async def mark(self, spans: Mapping[str, Span]) -> None:
        """Dirty marks for ``spans``, always written: the rollup worker may run on another replica."""
        if spans:
            marks = dirty_mark_lines(spans, self.writer_id, self._mark_time(len(spans)))
            await self.influx.write(marks, self.settings.influx_db, rp=RP_MARKS, precision="ns")
