"""Backend-managed rollups to 1 minute and 1 hour, correct for late and replayed data.

InfluxDB's continuous queries only ever look at the latest interval, so readings that arrive late (a gateway
back after a day offline) or are replayed would never reach the rollups. Instead every write of raw readings
is followed by a *dirty mark* (store/readings.py: minute range + devices, timestamped with the write time)
and this worker recomputes exactly the marked windows:

1. read the newest state point (``marks.rollup_state``): the watermark (the write time up to which marks were
   processed) and the windows the previous pass left to do (``marks.rollup_todo``);
2. advance the energy series' backfill by ``BACKFILL_MS`` of all devices, in chunks (store/energy_series.py);
3. read marks written in ``(watermark - overlap, now - settle]`` — the overlap re-reads marks of writes that
   became visible late (a slow /write), the settle delay leaves in-progress writes for the next pass;
4. merge them and the windows left to do into windows (minute-aligned) with their device sets, cut into chunks
   of at most ``rollup_chunk_s`` on a grid of that size, oldest first;
5. per chunk: ``SELECT ... INTO r1m FROM raw ... GROUP BY time(1m), *``, the boot edges, the same from ``r1m``
   into ``r1h`` for the enclosing hours, and the 15-min energy series per device and per site;
6. store the new watermark, the chunks not done yet (none at the end of a pass) and ``energy_v3_from_ms`` (the
   time from which the energy series are complete) — after every chunk, so a crash costs at most one chunk.

Every step is idempotent: a recomputed window overwrites the same points (measurement + tags + bucket time),
so two replicas running the worker, or a pass repeated after a crash, never corrupt data; a state point written
by another replica at the same time at worst makes a window be done twice (each pass's state holds everything it
read and did not finish, and the watermark it stores re-reads the marks written since).

Why chunks. A pass used to send a whole window — a day of 100 meters, 8.6 million raw points, when a day of
history arrives at once — as one query; it could not finish within the client's timeout, the pass failed before
storing anything, and the next pass sent the same query again, forever (InfluxDB may go on executing the
abandoned ones, adding load). Now the work of one query is bounded by ``rollup_chunk_s``, what is done is
recorded chunk by chunk, and a query that times out (:class:`~backend.errors.InfluxTimeoutError`) ends the pass
after halving the chunk size (down to a minute) and recording the chunk as still to do, so the next pass asks
InfluxDB for less rather than the same again. The size comes back when a pass leaves nothing behind (the worker
of each replica keeps its own: after a restart a catch-up starts at ``rollup_chunk_s`` again).

Rollup fields (both ``r1m`` and ``r1h``, measurement ``readings``, tags site/gateway/device):
``n`` (readings), ``energy_first``/``energy_last``/``energy_min``/``energy_max`` (register, mWh, integers),
``export_first``/``export_last``/``export_min``/``export_max`` (the exported-energy register ``energy_export_mwh``,
absent where the readings have none: old data reads as no export), ``boot_min``/``boot_max``,
``energy_pre``/``energy_post``/``energy_reset`` and the same ``export_*`` (only on a minute where a new boot
starts: each register just before and at its first reading, and what the step counts if it is a reset, see
``_boot_edges``; the hour keeps its last minute's),
``vrms_mean``/``_min``/``_max``, ``irms_mean``/``_max``, ``p_mean``/``_min``/``_max``,
``s_mean``/``_max``, ``pf_mean``/``_min``, ``freq_mean``, and ``<x>_sum`` for vrms, irms, p, s, pf, freq
(the hourly means are sum/n of the minutes, i.e. exact means over the readings).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Final

from backend.errors import InfluxError, InfluxTimeoutError
from backend.metrics import Metrics
from backend.settings import Settings
from backend.store.energy_series import BACKFILL_MS, FROM_FIELD, EnergySeries
from backend.store.influx import InfluxClient
from backend.store.layout import DIRTY, LEFT_TO_DO, READINGS, RP_1H, RP_1M, RP_MARKS, RP_RAW, STATE, table
from backend.store.lineprotocol import escape_key, escape_string_field
from backend.store.registers import Sample, edge_reset
from protocol.ids import is_device_id
from protocol.timebase import DAY_MS, HOUR_MS, MINUTE_MS

log = logging.getLogger(__name__)

OVERLAP_NS: Final = 60 * 10**9
EDGE_PAD_MS: Final = 15 * MINUTE_MS
"""How far before a window the reading before a boot change is looked for (see ``_boot_edges``)."""
EXPORT_FIELD: Final = "energy_export_mwh"
MAX_DEVICE_FILTER: Final = 200
"""Windows touching more devices than this are recomputed for all devices (cheaper than a huge regex)."""
ALL_DEVICES: Final = "*"
"""``devices`` of a window left to do (``LEFT_TO_DO``) that covers every device; never a device id (ids are hex)."""

_SUMMED: Final = ("vrms", "irms", "p", "s", "pf", "freq")

RAW_TO_1M: Final = ", ".join([
    "count(p) AS n",
    "first(energy_mwh) AS energy_first", "last(energy_mwh) AS energy_last",
    "min(energy_mwh) AS energy_min", "max(energy_mwh) AS energy_max",
    "min(boot) AS boot_min", "max(boot) AS boot_max",
    "first(energy_export_mwh) AS export_first", "last(energy_export_mwh) AS export_last",
    "min(energy_export_mwh) AS export_min", "max(energy_export_mwh) AS export_max",
    "mean(vrms) AS vrms_mean", "min(vrms) AS vrms_min", "max(vrms) AS vrms_max",
    "mean(irms) AS irms_mean", "max(irms) AS irms_max",
    "mean(p) AS p_mean", "min(p) AS p_min", "max(p) AS p_max",
    "mean(s) AS s_mean", "max(s) AS s_max",
    "mean(pf) AS pf_mean", "min(pf) AS pf_min",
    "mean(freq) AS freq_mean",
    *[f"sum({f}) AS {f}_sum" for f in _SUMMED],
])

M1_TO_1H: Final = ", ".join([
    "sum(n) AS n",
    "first(energy_first) AS energy_first", "last(energy_last) AS energy_last",
    "min(energy_min) AS energy_min", "max(energy_max) AS energy_max",
    "min(boot_min) AS boot_min", "max(boot_max) AS boot_max",
    "last(energy_pre) AS energy_pre", "last(energy_post) AS energy_post", "last(energy_reset) AS energy_reset",
    "first(export_first) AS export_first", "last(export_last) AS export_last",
    "min(export_min) AS export_min", "max(export_max) AS export_max",
    "last(export_pre) AS export_pre", "last(export_post) AS export_post", "last(export_reset) AS export_reset",
    "sum(vrms_sum) / sum(n) AS vrms_mean", "min(vrms_min) AS vrms_min", "max(vrms_max) AS vrms_max",
    "sum(irms_sum) / sum(n) AS irms_mean", "max(irms_max) AS irms_max",
    "sum(p_sum) / sum(n) AS p_mean", "min(p_min) AS p_min", "max(p_max) AS p_max",
    "sum(s_sum) / sum(n) AS s_mean", "max(s_max) AS s_max",
    "sum(pf_sum) / sum(n) AS pf_mean", "min(pf_min) AS pf_min",
    "sum(freq_sum) / sum(n) AS freq_mean",
    *[f"sum({f}_sum) AS {f}_sum" for f in _SUMMED],
])


@dataclass(slots=True)
class Window:
    """A time range [start, end) in ms and the devices to recompute in it (None = all)."""

    start: int
    end: int
    devices: set[str] | None


def merge_windows(marks: list[tuple[int, int, set[str] | None]], align: int, max_len: int = DAY_MS) -> list[Window]:
    """Overlapping or touching ranges merged (device sets united; None = all devices), aligned to ``align``, split
    on a grid of ``max_len`` (so hour-sized chunks are whole hours)."""
    aligned = sorted(((s - s % align, e if e % align == 0 else e - e % align + align, d) for s, e, d in marks),
                     key=lambda m: (m[0], m[1]))
    merged: list[Window] = []
    for start, end, devs in aligned:
        if merged and start <= merged[-1].end:
            last = merged[-1]
            last.end = max(last.end, end)
            last.devices = None if last.devices is None or devs is None else last.devices | devs
        else:
            merged.append(Window(start, end, None if devs is None else set(devs)))
    out: list[Window] = []
    for w in merged:
        if w.devices is not None and len(w.devices) > MAX_DEVICE_FILTER:
            w.devices = None
        s = w.start
        while s < w.end:
            e = min(w.end, s - s % max_len + max_len)
            out.append(Window(s, e, w.devices))
            s = e
    return out


def _window_rows(rows: list[dict[str, Any]]) -> list[tuple[int, int, set[str] | None]]:
    """Dirty marks or windows left to do, read back: (start, end, devices or None for all)."""
    return [(int(r["start_ms"]), int(r["end_ms"]),
             None if r.get("devices") == ALL_DEVICES else set(str(r["devices"]).split(",")))
            for r in rows if r.get("start_ms") is not None and r.get("end_ms") is not None]


def shrunk_chunk_ms(chunk_ms: int, failed_ms: int) -> int:
    """The chunk size after a chunk ``failed_ms`` long timed out: half of it (shorter than the size when it was the
    end of its window), in whole minutes, never below one minute — so the same query is not sent again, except at
    the floor, where no smaller one exists."""
    half = min(chunk_ms, failed_ms) // 2
    return max(MINUTE_MS, half - half % MINUTE_MS)


@dataclass(slots=True)
class _State:
    """The newest state point: the watermark and where its windows left to do are (``LEFT_TO_DO`` points timestamped
    ``todo_ns`` .. ``todo_ns + todo_n - 1``)."""

    watermark_ns: int
    todo_ns: int
    todo_n: int


def _device_filter(devices: set[str] | None) -> str:
    if devices is None:
        return ""
    valid = sorted(d for d in devices if is_device_id(d))  # ids are hex: safe inside the regex
    if not valid:
        return " AND device = ''"
    return f" AND device =~ /^({'|'.join(valid)})$/"


class RollupWorker:
    """Periodic rollup passes (``run_once`` is also called directly by tests and the benchmark)."""

    def __init__(self, influx: InfluxClient, settings: Settings, metrics: Metrics | None = None) -> None:
        self.influx = influx
        self.settings = settings
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.passes = 0
        self.energy = EnergySeries(influx, settings)
        self._earliest: int | None = None
        self.chunk_ms = self._configured_chunk_ms()
        """Current chunk size: ``rollup_chunk_s``, halved after each timeout until a pass leaves nothing behind."""
        self._todo_ns = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rollups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                if self.metrics:
                    self.metrics.rollup_passes.labels("ok").inc()
            except InfluxError as exc:
                if self.metrics:
                    self.metrics.rollup_passes.labels("error").inc()
                log.warning("rollup pass failed", extra={"error": str(exc)[:300]})
            await asyncio.sleep(self.settings.rollup_interval_s)

    def _configured_chunk_ms(self) -> int:
        ms = int(self.settings.rollup_chunk_s * 1000)
        return max(MINUTE_MS, ms - ms % MINUTE_MS)

    async def _state(self) -> _State:
        """The newest state point as a whole (``last()`` per field would pair one point's watermark with an older
        point's windows left to do)."""
        db = self.settings.influx_db
        rows = await self.influx.rows(f"SELECT watermark_ns, todo_ns, todo_n FROM {table(db, RP_MARKS, STATE)} "
                                      "ORDER BY time DESC LIMIT 1", db=db, epoch="ns")
        row = rows[0] if rows else {}
        return _State(*(int(row.get(k) or 0) for k in ("watermark_ns", "todo_ns", "todo_n")))

    async def _todo(self, state: _State) -> list[tuple[int, int, set[str] | None]]:
        if not state.todo_n:
            return []
        db = self.settings.influx_db
        rows = await self.influx.rows(
            f"SELECT start_ms, end_ms, devices FROM {table(db, RP_MARKS, LEFT_TO_DO)} WHERE time >= $a AND time < $b",
            db=db, params={"a": state.todo_ns, "b": state.todo_ns + state.todo_n}, epoch="ns")
        return _window_rows(rows)

    async def _record(self, hi: int, todo: list[Window], energy_from: int) -> None:
        """The state after a chunk: marks up to ``hi`` read, ``todo`` still to do. The windows go first, so a crash
        between the two writes leaves the previous state (its work done again), never a state without them."""
        db = self.settings.influx_db
        left = merge_windows([(w.start, w.end, w.devices) for w in todo], MINUTE_MS)
        # Timestamps unique across records of this worker, so a later record never overwrites an earlier one's.
        gen = max(time.time_ns(), self._todo_ns)
        self._todo_ns = gen + len(left)
        if left:
            await self.influx.write(
                [f"{LEFT_TO_DO} start_ms={w.start}i,end_ms={w.end}i,devices="
                 f"{escape_string_field(ALL_DEVICES if w.devices is None else ','.join(sorted(w.devices)))} {gen + i}"
                 for i, w in enumerate(left)], db, rp=RP_MARKS, precision="ns")
        # A new point per record (the marks RP expires old ones); the newest is the state.
        await self.influx.write([f"{STATE} watermark_ns={hi}i,{FROM_FIELD}={energy_from}i,todo_ns={gen}i,"
                                 f"todo_n={len(left)}i {time.time_ns()}"], db, rp=RP_MARKS, precision="ns")

    async def energy_from(self) -> int | None:
        """``FROM_FIELD`` of the newest state point: None before the first pass of this version."""
        return await energy_from_ms(self.influx, self.settings)

    async def _backfill(self, now_ms: int, state: _State, todo: list[Window]) -> int:
        """This pass's stretch of the energy series' backfill, going back in time: ``BACKFILL_MS`` of all devices
        in chunks; returns the new ``FROM_FIELD`` value. A chunk that times out is raised after the chunks before
        it are recorded (with the previous watermark and windows left to do: nothing else has moved yet)."""
        cursor = await self.energy_from()
        if cursor is None:  # first pass of this version: everything up to a day ahead is to be backfilled
            cursor = now_ms - now_ms % HOUR_MS + DAY_MS
        if cursor == 0:
            return 0
        if self._earliest is None:
            self._earliest = await self.energy.earliest_ms()
        if self._earliest is None or cursor <= self._earliest:
            return 0
        stop = cursor - BACKFILL_MS
        while cursor > stop:
            start = max(stop, cursor - self.chunk_ms)
            # Rolled up again from the raw readings while they are kept (a SELECT INTO over expired raw data writes
            # nothing, so older rollups stay): rollups written by an older version gain the fields added since
            # (the export register, the boot edges) before the series are recomputed from them.
            try:
                await self._roll(Window(start, cursor, None))
            except InfluxTimeoutError:
                self._timed_out(cursor - start, "energy backfill")
                await self._record(state.watermark_ns, todo, cursor)
                raise
            if start <= self._earliest:
                return 0
            cursor = start
        return cursor

    async def run_once(self, now_ns: int | None = None) -> int:
        """One pass; returns the number of windows recomputed (1m + 1h) for dirty marks. A query that timed out is
        raised (:class:`~backend.errors.InfluxTimeoutError`) after the chunk size was halved and the state recorded
        with that chunk still to do."""
        async with self._lock:
            s = self.settings
            db = s.influx_db
            hi = (now_ns or time.time_ns()) - int(s.rollup_settle_s * 1e9)
            state = await self._state()
            lo = max(0, state.watermark_ns - OVERLAP_NS)
            if hi <= lo:
                return 0
            todo = await self._todo(state)
            energy_from = await self._backfill(hi // 1_000_000, state, merge_windows(todo, MINUTE_MS))
            rows = await self.influx.rows(
                f"SELECT start_ms, end_ms, devices FROM {table(db, RP_MARKS, DIRTY)} WHERE time > $lo AND time <= $hi",
                db=s.influx_db, params={"lo": lo, "hi": hi}, epoch="ns")
            chunks = merge_windows(_window_rows(rows) + todo, MINUTE_MS, self.chunk_ms)
            done = 0
            for i, chunk in enumerate(chunks):
                try:
                    await self._roll(chunk)
                except InfluxTimeoutError:
                    self._timed_out(chunk.end - chunk.start, "chunk")
                    await self._record(hi, chunks[i:], energy_from)
                    raise
                done += 2
                if i + 1 < len(chunks):  # the last chunk's record is the pass's, below
                    await self._record(hi, chunks[i + 1:], energy_from)
            await self._record(hi, [], energy_from)
            if energy_from == 0:  # nothing left behind: the next catch-up starts at the configured size again
                self.chunk_ms = self._configured_chunk_ms()
            self.passes += 1
            return done

    def _timed_out(self, failed_ms: int, what: str) -> None:
        before, self.chunk_ms = self.chunk_ms, shrunk_chunk_ms(self.chunk_ms, failed_ms)
        log.warning("rollup query timed out: smaller chunks from now on",
                    extra={"what": what, "failed_ms": failed_ms, "chunk_ms_before": before,
                           "chunk_ms_after": self.chunk_ms})

    async def _roll(self, chunk: Window) -> None:
        """Everything of one chunk: its minutes, their boot edges, its hours (from the minutes, so an hour cut by a
        chunk boundary is recomputed again with the next chunk and ends up whole) and its energy series."""
        await self._recompute(chunk, RP_RAW, RP_1M, RAW_TO_1M, "1m")
        await self._boot_edges(chunk)
        hours = Window(chunk.start - chunk.start % HOUR_MS, -(-chunk.end // HOUR_MS) * HOUR_MS, chunk.devices)
        await self._recompute(hours, RP_1M, RP_1H, M1_TO_1H, "1h")
        await self.energy.recompute(chunk.start, chunk.end, chunk.devices)
        if self.metrics:
            self.metrics.rollup_windows.labels("energy").inc()

    async def _boot_edges(self, w: Window) -> None:
        """``energy_pre``/``energy_post``/``energy_reset`` (and ``export_*``) on the 1-minute rollup of each minute
        where a new boot starts: each register just before the new boot's first reading and at it, and what that
        step counts if it is a reset, judged over the readings' own interval (registers.window_samples and
        edge_reset; judged over a rollup window, a register of a few tens of kWh looks like energy since a
        reset). A min/max/first/last aggregate cannot say where inside a window a register stepped back, so these
        few minutes are read back from the raw readings. The step is looked for from ``EDGE_PAD_MS`` before the
        window, so a boot that starts a window is found too (that is what the hour and day folds need)."""
        db = self.settings.influx_db
        max_w = self.settings.analytics_max_power_w
        where = f"time >= $lo AND time < $end{_device_filter(w.devices)}"
        series = await self.influx.query(
            f"SELECT d FROM (SELECT difference(boot) AS d FROM {table(db, RP_RAW)} WHERE {where} GROUP BY *) "
            f"WHERE d != 0 GROUP BY *", db=db, epoch="ms",
            params={"lo": (w.start - EDGE_PAD_MS) * 1_000_000, "end": w.end * 1_000_000})
        lines: dict[tuple[str, int], str] = {}
        for ser in series:
            tags = ",".join(f"{k}={escape_key(v)}" for k, v in sorted(ser.tags.items()) if v)
            # The window's start is applied here, not in the outer WHERE: InfluxDB 1.x narrows the subquery to the
            # outer query's time range, which dropped the pad and with it a boot on the window's first reading (a
            # chunk that starts at a reboot).
            for t, _ in (v for v in ser.values if int(v[0]) >= w.start):
                rows = await self.influx.rows(
                    f"SELECT energy_mwh, {EXPORT_FIELD}, boot FROM {table(db, RP_RAW)} WHERE device = $d "
                    "AND time <= $t ORDER BY time DESC LIMIT 2", db=db, epoch="ms",
                    params={"d": ser.tags.get("device", ""), "t": int(t) * 1_000_000})
                if len(rows) < 2 or any(r.get("energy_mwh") is None for r in rows):
                    continue
                at, before = rows
                fields = ",".join(
                    f"{name}_pre={b.energy_mwh}i,{name}_post={a.energy_mwh}i,{name}_reset={edge_reset(b, a, max_w)}i"
                    for name, field in (("energy", "energy_mwh"), ("export", EXPORT_FIELD))
                    if before.get(field) is not None and at.get(field) is not None
                    for b, a in [(Sample(int(before["time"]), int(before[field]), int(before["boot"])),
                                  Sample(int(at["time"]), int(at[field]), int(at["boot"])))])
                minute = int(t) - int(t) % MINUTE_MS
                lines[(tags, minute)] = f"{READINGS},{tags} {fields} {minute}"  # the newest boot of a minute wins
        if lines:
            await self.influx.write(list(lines.values()), db, rp=RP_1M, precision="ms")

    async def _recompute(self, w: Window, src: str, dst: str, fields: str, label: str) -> None:
        s = self.settings
        db = s.influx_db
        q = (f"SELECT {fields} INTO {table(db, dst)} FROM {table(db, src)} "
             f"WHERE time >= $start AND time < $end{_device_filter(w.devices)} "
             f"GROUP BY time({'1m' if label == '1m' else '1h'}), * fill(none)")
        await self.influx.execute(q, db=s.influx_db, params={"start": w.start * 1_000_000, "end": w.end * 1_000_000})
        if self.metrics:
            self.metrics.rollup_windows.labels(label).inc()


async def energy_from_ms(influx: InfluxClient, settings: Settings) -> int | None:
    """Time from which the energy series (store/energy_series.py) are complete; 0 = all; None = not yet."""
    rows = await influx.rows(f"SELECT last({FROM_FIELD}) FROM {table(settings.influx_db, RP_MARKS, STATE)}",
                             db=settings.influx_db)
    return int(rows[0]["last"]) if rows and rows[0].get("last") is not None else None


SERIES_START_MAX_AGE_S: Final = 5.0
"""How long a read of where the energy series begin is reused: one pass of the rollup worker (its default
``rollup_interval_s``)."""


@dataclass
class SeriesStart:
    """The time from which the energy series are complete (:func:`energy_from_ms`), reused for
    :data:`SERIES_START_MAX_AGE_S`.

    Every consumption read asks it first, to choose between the series and the per-meter rollups: five times in one
    ``painel/resumo``, a round trip to InfluxDB each. It is not a number shown to anyone but the choice of a path,
    and both paths give the same kWh (tests/analytics/test_query_paths.py). The value only moves back in time as
    the worker backfills, so a reused value at worst sends a query to the rollups a few seconds longer than needed.
    "Not yet" (None) is never reused, so the first read after the backfill begins sees it at once."""

    value: int | None = None
    read_at: float = -math.inf

    async def read(self, influx: InfluxClient, settings: Settings) -> int | None:
        if self.value is not None and time.monotonic() - self.read_at < SERIES_START_MAX_AGE_S:
            return self.value
        self.value, self.read_at = await energy_from_ms(influx, settings), time.monotonic()
        return self.value
