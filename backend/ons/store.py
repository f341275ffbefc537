"""ONS data in InfluxDB: the grid series, what was read from which file, and the log of pulls.

Layout (retention policy ``ons`` in the backend's database, kept forever, shards of 52 weeks; names in
backend/store/layout.py):

* ``ons_balanco`` — tags ``subsystem`` (SE, S, NE, N: never SIN, see datasets.py) and ``source`` (hidraulica,
  termica, eolica, solar, carga, intercambio); field ``mwh`` (MWmed over the hour = MWh); time = start of the hour.
* ``ons_balanco_dia`` — the same per local day (Brasília), written by the pull with the hours: fields ``mwh``
  (sum), ``horas`` (hours with a value) and ``ultima`` (start of the day's newest hour, UTC ms). Day and month
  buckets and "how new is the data" read these 24 times fewer points (a year by month in a few ms).
* ``ons_carga`` — hourly load curve: tag ``subsystem``, field ``mwh``.
* ``ons_cmo`` — half-hourly marginal cost: tag ``subsystem``, field ``rs_mwh`` (R$/MWh, may be negative).
* ``ons_arquivo`` — one point per file read (tag ``arquivo`` = its S3 key, time 0, so it is overwritten): ETag,
  Last-Modified, size, rows and a digest per month of its rows. Replicas share it, so none re-downloads a file
  another one already read, and a changed file rewrites only the months whose rows changed.
* ``ons_sync`` — one point per pull attempt (ok, counts, error, replica): the age of the data comes from here.

A point is keyed by measurement + tags + time, so re-reading a revised file overwrites the old values in place:
no duplicates, and two replicas pulling at once write identical points.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

from backend.ons.datasets import BALANCE, Dataset
from backend.ons.records import Row
from backend.store.influx import InfluxClient, quote_ident
from backend.store.layout import ONS_BALANCE_DAY, ONS_FILE, ONS_SYNC, RP_ONS, ensure_policy, table
from backend.store.lineprotocol import escape_key, escape_measurement, point
from protocol.timebase import TZ

WRITE_CHUNK: Final = 10_000
SHARD_DURATION: Final = "52w"


class FileState(msgspec.Struct):
    """What CDS last read from one file."""

    key: str
    dataset: str
    url: str
    etag: str = ""
    last_modified: str = ""
    size: int | None = None
    format: str = ""
    rows: int = 0
    digests: dict[str, str] = msgspec.field(default_factory=dict)
    """UTC month (``2026-03``) -> digest of that month's rows."""
    read_at: str = ""


class SyncStatus(msgspec.Struct):
    last_ok_at: str | None
    last_attempt_at: str | None
    last_error: str
    age_s: float | None
    """Seconds since the last successful pull (None = never)."""
    attempt_age_s: float | None = None


def month_of(ts_ms: int) -> str:
    """The UTC month (``2026-03``) of an instant (``time.gmtime``: a yearly file asks this of every row)."""
    t = time.gmtime(ts_ms // 1000)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def months_of(rows: Iterable[Row]) -> dict[int, str]:
    """The UTC month of each distinct instant of ``rows`` (the subsystems of a file share each instant)."""
    out: dict[int, str] = {}
    for r in rows:
        if r.ts_ms not in out:
            out[r.ts_ms] = month_of(r.ts_ms)
    return out


def digests(rows: Iterable[Row], months: dict[int, str] | None = None) -> dict[str, str]:
    """A digest of the rows of each UTC month, to tell which months a revised file changed (``months``: the
    rows' :func:`months_of`, when the caller has it)."""
    ordered = sorted(rows, key=lambda r: (r.ts_ms, r.subsystem))
    month_at = months if months is not None else months_of(ordered)
    hashes: dict[str, Any] = {}
    for r in ordered:
        h = hashes.get(month := month_at[r.ts_ms])
        if h is None:
            h = hashes[month] = hashlib.blake2b(digest_size=8)
        h.update(f"{r.ts_ms}|{r.subsystem}|{sorted(r.values.items())}\n".encode())
    return {m: h.hexdigest() for m, h in sorted(hashes.items())}


def lines(dataset: Dataset, rows: Iterable[Row]) -> Iterator[str]:
    """Line protocol for ``rows``: one point per value for the balance (``source`` tag), one per row otherwise.
    Tag values are our own constants, so each series' escaped prefix is built once."""
    measurement = escape_measurement(dataset.measurement)
    prefixes: dict[tuple[str, str], str] = {}
    field = escape_key(dataset.value_field)
    for r in rows:
        for name, value in r.values.items():
            prefix = prefixes.get((r.subsystem, name))
            if prefix is None:
                tags = f",source={escape_key(name)}" if dataset is BALANCE else ""
                prefix = prefixes[(r.subsystem, name)] = f"{measurement}{tags},subsystem={escape_key(r.subsystem)} "
            yield f"{prefix}{field}={value!r} {r.ts_ms}"


def local_day(ts_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ms / 1000, TZ).date()


def day_start_ms(day: dt.date) -> int:
    """The first instant of a local day (01:00 when DST skipped midnight), where InfluxDB's ``tz()`` day starts."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp() * 1000)


def daily_lines(rows: Iterable[Row], days: set[dt.date]) -> Iterator[str]:
    """``ons_balanco_dia`` points of the local ``days``, from every hour of them in ``rows`` (a yearly file holds
    whole local days, so a day's sum is complete whenever one of its hours changed)."""
    sums: dict[tuple[dt.date, str, str], list[Any]] = {}
    day_at: dict[int, dt.date] = {}  # the subsystems of an hour share its instant: one zoneinfo conversion each
    for r in rows:
        day = day_at.get(r.ts_ms)
        if day is None:
            day = day_at[r.ts_ms] = local_day(r.ts_ms)
        if day not in days:
            continue
        for name, value in r.values.items():
            acc = sums.setdefault((day, r.subsystem, name), [0.0, 0, 0])
            acc[0] += value
            acc[1] += 1
            acc[2] = max(acc[2], r.ts_ms)
    measurement = escape_measurement(ONS_BALANCE_DAY)
    for (day, subsystem, name), (mwh, hours, last) in sorted(sums.items()):
        yield (f"{measurement},source={escape_key(name)},subsystem={escape_key(subsystem)} "
               f"mwh={float(mwh)!r},horas={hours}i,ultima={last}i {day_start_ms(day)}")


def _iso(ms: int | None) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat() if ms is not None else None


class OnsStore:
    """Reads and writes the ONS measurements of one database."""

    def __init__(self, influx: InfluxClient, db: str) -> None:
        self.influx = influx
        self.db = db

    def t(self, measurement: str) -> str:
        """The fully qualified table of an ONS measurement."""
        return table(self.db, RP_ONS, measurement)

    async def ensure_schema(self) -> None:
        await self.influx.execute(f"CREATE DATABASE {quote_ident(self.db)}", epoch=None)
        # A year of every dataset is ~0.5 M points: shards of a year each (InfluxDB's default for an INF policy
        # is a week) let a query over a year open one or two shards instead of 52 (10-20 times faster).
        await ensure_policy(self.influx, self.db, RP_ONS, f"DURATION INF REPLICATION 1 SHARD DURATION {SHARD_DURATION}")

    async def write(self, body: Iterable[str]) -> int:
        """Write lines in chunks; returns how many. Raises InfluxError (nothing is recorded as read then)."""
        chunk: list[str] = []
        count = 0
        for line in body:
            chunk.append(line)
            if len(chunk) >= WRITE_CHUNK:
                await self.influx.write(chunk, self.db, rp=RP_ONS, precision="ms")
                count += len(chunk)
                chunk = []
        if chunk:
            await self.influx.write(chunk, self.db, rp=RP_ONS, precision="ms")
            count += len(chunk)
        return count

    async def file_states(self) -> dict[str, FileState]:
        rows = await self.influx.rows(f"SELECT * FROM {self.t(ONS_FILE)}", db=self.db)
        out: dict[str, FileState] = {}
        for r in rows:
            size = r.get("size")
            out[r["arquivo"]] = FileState(
                key=r["arquivo"], dataset=r.get("dataset") or "", url=r.get("url") or "", etag=r.get("etag") or "",
                last_modified=r.get("last_modified") or "", size=int(size) if size is not None and size >= 0 else None,
                format=r.get("format") or "", rows=int(r.get("rows") or 0),
                digests=msgspec.json.decode(r.get("digests") or "{}", type=dict[str, str]),
                read_at=r.get("read_at") or "")
        return out

    async def record_file(self, state: FileState) -> None:
        fields: dict[str, Any] = {
            "dataset": state.dataset, "url": state.url, "etag": state.etag, "last_modified": state.last_modified,
            "size": state.size if state.size is not None else -1, "format": state.format, "rows": state.rows,
            "digests": msgspec.json.encode(state.digests).decode(), "read_at": state.read_at}
        await self.write([point(ONS_FILE, {"arquivo": state.key}, fields, 0)])

    async def record_sync(self, *, ok: bool, files_read: int, points: int, error: str, replica: str) -> None:
        fields: dict[str, Any] = {"ok": ok, "files_read": files_read, "points": points, "error": error[:500],
                                  "replica": replica}
        await self.write([point(ONS_SYNC, {}, fields, int(time.time() * 1000))])

    async def status(self) -> SyncStatus:
        ok, last = await asyncio.gather(  # two independent reads, side by side (``/ons/agora`` shows this status)
            self.influx.rows(f"SELECT last(points) FROM {self.t(ONS_SYNC)} WHERE ok = true", db=self.db),
            self.influx.rows(f"SELECT last(error) AS error FROM {self.t(ONS_SYNC)}", db=self.db))
        last_ok = int(ok[0]["time"]) if ok else None
        last_at = int(last[0]["time"]) if last else None
        now = time.time() * 1000
        return SyncStatus(
            last_ok_at=_iso(last_ok), last_attempt_at=_iso(last_at),
            last_error=(last[0].get("error") or "") if last else "",
            age_s=round((now - last_ok) / 1000, 1) if last_ok is not None else None,
            attempt_age_s=round((now - last_at) / 1000, 1) if last_at is not None else None)
