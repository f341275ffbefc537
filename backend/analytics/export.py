"""Data out for analysts: a site's raw readings or 1-minute / 1-hour rollups over a period, as CSV or Parquet,
produced piece by piece so the size of the period never shows in memory.

A year of 1-minute rollups of 100 meters is 52 million rows; neither InfluxDB's JSON answer nor a pyarrow table of
it fits in a backend replica. So the period is cut into time windows holding at most ``chunk_rows`` rows (windows
sized from the number of meters of the site and the resolution of the level), each window is one bounded query,
becomes one Arrow record batch, and leaves as bytes before the next is read: a Parquet row group (pyarrow's
``ParquetWriter`` writing into a sink we drain after each batch) or a block of CSV lines. Memory is bounded by one
window whatever the period.

Columns: ``time`` (UTC; start of the bucket for rollups), ``site``, ``gateway``, ``device``, the stored fields of
the level, and ``consumo_kwh`` — the import register's step since the previous row of the same meter (the first
row of a meter: within its own bucket), empty across a register reset or reboot, so ``sum(consumo_kwh)`` over a
meter is its consumption over the period, the figure ``GET /api/v1/analytics/consumo`` gives. Rows come window by
window, inside a window meter by meter in time order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Final, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from backend.store.influx import InfluxClient, quote_ident, quote_string
from backend.store.layout import READINGS, RP_1H, RP_1M, RP_RAW, table

Level = Literal["raw", "1m", "1h"]
Format = Literal["csv", "csv-br", "parquet"]

_TZ: Final = ZoneInfo("America/Sao_Paulo")
_RAW_FLOATS: Final = ("vrms", "irms", "p", "s", "pf", "freq")
_RAW_INTS: Final = ("energy_mwh", "energy_export_mwh", "boot", "seq", "flags")
_ROLLUP_FLOATS: Final = ("vrms_mean", "vrms_min", "vrms_max", "irms_mean", "irms_max", "p_mean", "p_min", "p_max",
                         "s_mean", "s_max", "pf_mean", "pf_min", "freq_mean")
_ROLLUP_INTS: Final = ("n", "energy_first", "energy_last", "export_first", "export_last", "boot_min", "boot_max")


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """Where a level's rows live and what they hold."""

    rp: str
    step_ms: int
    """Nominal spacing of one meter's rows (raw: the gateways' 1 s reading period)."""
    floats: tuple[str, ...]
    ints: tuple[str, ...]
    first: str
    """Import register at the start of a row (raw: the reading itself)."""
    last: str
    boot: str


LEVELS: Final[dict[str, LevelSpec]] = {
    "raw": LevelSpec(RP_RAW, 1_000, _RAW_FLOATS, _RAW_INTS, "energy_mwh", "energy_mwh", "boot"),
    "1m": LevelSpec(RP_1M, 60_000, _ROLLUP_FLOATS, _ROLLUP_INTS, "energy_first", "energy_last", "boot_max"),
    "1h": LevelSpec(RP_1H, 3_600_000, _ROLLUP_FLOATS, _ROLLUP_INTS, "energy_first", "energy_last", "boot_max"),
}
MEDIA_TYPES: Final[dict[str, str]] = {"csv": "text/csv; charset=utf-8", "csv-br": "text/csv; charset=utf-8",
                                      "parquet": "application/vnd.apache.parquet"}


def schema(level: Level) -> pa.Schema:
    spec = LEVELS[level]
    return pa.schema([pa.field("time", pa.timestamp("ms", tz="UTC")), pa.field("site", pa.string()),
                      pa.field("gateway", pa.string()), pa.field("device", pa.string()),
                      *(pa.field(f, pa.float64()) for f in spec.floats),
                      *(pa.field(f, pa.int64()) for f in spec.ints), pa.field("consumo_kwh", pa.float64())])


def windows(start_ms: int, end_ms: int, level: Level, meters: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """[a, b) windows covering [start, end), each holding at most about ``chunk_rows`` rows of ``meters`` meters
    (never shorter than one row's step, so a level always advances)."""
    step = LEVELS[level].step_ms
    width = max(step, chunk_rows // max(meters, 1) * step)
    a = start_ms
    while a < end_ms:
        yield a, min(a + width, end_ms)
        a += width


class _Registers:
    """The per-meter state carried across windows for ``consumo_kwh``: the last register value and boot."""

    def __init__(self, spec: LevelSpec) -> None:
        self.spec = spec
        self.last: dict[str, tuple[int, int]] = {}

    def steps(self, device: str, firsts: list[int | None], lasts: list[int | None],
              boots: list[int | None]) -> list[float | None]:
        out: list[float | None] = []
        prev = self.last.get(device)
        for first, last, boot in zip(firsts, lasts, boots, strict=True):
            if last is None or boot is None:
                out.append(None)
                continue
            if prev is None:
                base: int | None = first  # a meter's first row: what it counted inside its own bucket
            else:
                base = prev[0] if prev[1] == boot else None
            delta = None if base is None or last < base else (last - base) / 1e6
            out.append(delta)
            prev = (last, boot)
        if prev is not None:
            self.last[device] = prev
        return out


async def meters_of(influx: InfluxClient, db: str, level: Level, site: str, device: str | None) -> int:
    """How many meters the site has rows for (any time): sizes the windows."""
    if device:
        return 1
    spec = LEVELS[level]
    source = f"{quote_ident(spec.rp)}.{quote_ident(READINGS)}"
    rows = await influx.rows(f'SHOW TAG VALUES ON {quote_ident(db)} FROM {source} WITH KEY = "device" '
                             f'WHERE "site" = {quote_string(site)}', db=db)
    return len(rows)


async def record_batches(influx: InfluxClient, db: str, level: Level, site: str, device: str | None,
                         start_ms: int, end_ms: int, chunk_rows: int) -> AsyncIterator[pa.RecordBatch]:
    """The rows of ``site`` (or of one of its meters) in [start, end), one record batch per non-empty window."""
    spec = LEVELS[level]
    sch = schema(level)
    fields = (*spec.floats, *spec.ints)
    where = '"site" = $site' + (' AND "device" = $device' if device else "")
    q = (f"SELECT {', '.join(quote_ident(f) for f in fields)} FROM {table(db, spec.rp)} "
         f'WHERE {where} AND time >= $a AND time < $b GROUP BY "device", "gateway"')
    registers = _Registers(spec)
    meters = await meters_of(influx, db, level, site, device)
    for a, b in windows(start_ms, end_ms, level, meters, chunk_rows):
        params: dict[str, str | int] = {"site": site, "a": a * 1_000_000, "b": b * 1_000_000}
        if device:
            params["device"] = device
        series = await influx.query(q, db=db, params=params)
        parts: list[pa.RecordBatch] = []
        for s in series:
            if not s.values:
                continue
            cols = dict(zip(s.columns, zip(*s.values, strict=True), strict=True))
            dev, gw, n = s.tags.get("device", ""), s.tags.get("gateway", ""), len(s.values)
            consumo = registers.steps(dev, list(cols[spec.first]), list(cols[spec.last]), list(cols[spec.boot]))
            arrays = [pa.array(cols["time"], pa.int64()).cast(sch.field("time").type),
                      pa.array([site] * n, pa.string()), pa.array([gw] * n, pa.string()),
                      pa.array([dev] * n, pa.string()),
                      *(pa.array(cols[f], pa.float64()) for f in spec.floats),
                      *(pa.array(cols[f], pa.int64()) for f in spec.ints), pa.array(consumo, pa.float64())]
            parts.append(pa.RecordBatch.from_arrays(arrays, schema=sch))
        del series
        if parts:
            yield pa.Table.from_batches(parts, schema=sch).combine_chunks().to_batches()[0]


class _Drain:
    """A write-only sink whose bytes are taken out after each row group (pyarrow writes into it)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


async def parquet_stream(batches: AsyncIterator[pa.RecordBatch], level: Level) -> AsyncIterator[bytes]:
    """A Parquet file, one row group per batch, yielded as it is written (the footer last)."""
    sink = _Drain()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema(level), compression="zstd")
    try:
        async for batch in batches:
            writer.write_batch(batch)
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


async def csv_stream(batches: AsyncIterator[pa.RecordBatch], level: Level) -> AsyncIterator[bytes]:
    """Machine CSV: ``,`` separator, ``.`` decimals, ISO 8601 UTC times, a header line, no BOM."""
    header = True
    async for batch in batches:
        buf = io.BytesIO()
        pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=header))
        header = False
        yield buf.getvalue()
    if header:  # no rows at all: still a header, so the file's columns are known
        yield ",".join(f'"{name}"' for name in schema(level).names).encode() + b"\n"


def _br(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value).replace(".", ",")
    return str(value)


async def csv_br_stream(batches: AsyncIterator[pa.RecordBatch], level: Level) -> AsyncIterator[bytes]:
    """CSV for a pt-BR spreadsheet, as the reports (backend/analytics/reports.py): UTF-8 with BOM, ``;``, decimal
    comma, times in Brasília time ``dd/mm/aaaa hh:mm:ss``; full precision, no thousands separator."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    names = schema(level).names
    w.writerow(["horario_brasilia" if n == "time" else n for n in names])
    yield ("\ufeff" + buf.getvalue()).encode()
    async for batch in batches:
        buf.seek(0)
        buf.truncate()
        cols = batch.to_pydict()
        times = [t.astimezone(_TZ).strftime("%d/%m/%Y %H:%M:%S") for t in cols["time"]]
        rest = [cols[n] for n in names[1:]]
        for i, t in enumerate(times):
            w.writerow([t, *(_br(c[i]) for c in rest)])
        yield buf.getvalue().encode()


STREAMS: Final = {"csv": csv_stream, "csv-br": csv_br_stream, "parquet": parquet_stream}
