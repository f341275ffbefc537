"""ONS rows as typed records: values, Brasília wall-clock times and the quirks of each vintage (sans-IO).

A file's rows arrive as raw cells (text from CSV; text, numbers, decimals or datetimes from Parquet, depending on
the year the file was written). This module turns them into :class:`Row` records and counts what it set aside:

* **values**: ``0E-8`` (a zero with scale 8, as ONS's database exports it), ``2736.97290039``, numbers stored as
  text in some years and as floats in others, surrounding spaces; an empty cell is "no value" (never zero);
* **times**: ``din_instante`` is Brasília civil time at the *start* of the interval (ONS does not say so; the
  research in docs/ons.md shows it). It is converted with ``zoneinfo`` (never a fixed −3 h): before 2019 Brazil
  had daylight saving time, so the spring-forward hour does not exist and the fall-back hour happens twice;
* **DST placeholders**: ONS emits a row for the hour that does not exist (values ``0E-8`` or empty). Such a row
  carries no energy and would collide with the next hour once converted, so it is dropped and counted. The
  repeated hour at the end of DST appears once in the files: it is read as its first occurrence;
* **the SIN row** of the energy balance (the sum of the four subsystems) is dropped and counted (datasets.py);
* Parquet ``TIMESTAMP`` columns (INT96) read as UTC instants but hold the local wall clock: the tz label is
  ignored and the wall clock is interpreted in Brasília time.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from backend.ons.datasets import SIN, subsystem_code
from protocol.timebase import TZ


class OnsFormatError(ValueError):
    """A file or a cell that cannot be read (unknown header, bad number, bad timestamp)."""


class Row(msgspec.Struct, frozen=True):
    """One interval of one subsystem: its start (UTC ms) and the values present in the file."""

    ts_ms: int
    subsystem: str
    values: dict[str, float]


class ParseStats(msgspec.Struct):
    """What a file held besides the rows kept."""

    rows: int = 0
    """Data rows in the file."""
    kept: int = 0
    sin_rows: int = 0
    """SIN rows dropped (they would double any sum)."""
    dst_placeholders: int = 0
    """Rows for a local hour that did not exist (start of daylight saving time)."""
    empty: int = 0
    """Rows without any value (e.g. a missing load value)."""
    empty_values: int = 0
    """Single empty cells in rows that were kept."""
    bad: int = 0
    """Rows that could not be read (unknown subsystem, bad number or time); the first errors are in ``errors``."""
    errors: list[str] = msgspec.field(default_factory=list)

    def add(self, other: ParseStats) -> None:
        for name in ("rows", "kept", "sin_rows", "dst_placeholders", "empty", "empty_values", "bad"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors += other.errors[: max(0, 10 - len(self.errors))]


def parse_number(value: Any) -> float | None:
    """A cell as a float; None for an empty cell. Accepts ``0E-8``, text with spaces, a decimal comma, Decimal."""
    if type(value) is float:  # Parquet doubles: most cells of most files
        if math.isinf(value):
            raise OnsFormatError(f"número infinito: {value!r}")
        return None if math.isnan(value) else value
    if value is None:
        return None
    if isinstance(value, bool):
        raise OnsFormatError(f"valor booleano inesperado: {value!r}")
    if isinstance(value, int | float | Decimal):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            number = float(Decimal(text if "," not in text or "." in text else text.replace(",", ".")))
        except InvalidOperation:
            raise OnsFormatError(f"número inválido: {text[:40]!r}") from None
    if math.isnan(number):
        return None  # Parquet nulls of float columns
    if math.isinf(number):
        raise OnsFormatError(f"número infinito: {value!r}")
    return number


_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
                   "%Y-%m-%d", "%d/%m/%Y")


def wall_clock(value: Any) -> dt.datetime:
    """A cell as a naive local datetime (tz labels of Parquet timestamps are dropped, see the module doc)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value).strip() if value is not None else ""
    if text.endswith("Z"):
        text = text[:-1]
    head = text.split(".")[0] if "." in text[10:] else text
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(head, fmt)
        except ValueError:
            continue
    raise OnsFormatError(f"data/hora inválida: {text[:40]!r}")


def local_ms(wall: dt.datetime) -> int | None:
    """UTC milliseconds of a Brasília wall-clock time; None when that wall time did not exist (DST gap).

    An ambiguous time (the hour repeated when DST ended) is taken as its first occurrence (``fold=0``).
    """
    aware = wall.replace(tzinfo=TZ, fold=0)
    utc = aware.astimezone(dt.UTC)
    if utc.astimezone(TZ).replace(tzinfo=None) != wall:
        return None
    return int(utc.timestamp() * 1000)


class _Memo:
    """The subsystem of each (id, name) pair and the instant of each time cell, worked out once per file: a file
    repeats both on every row (five subsystems share an hour), and folding names and converting through zoneinfo
    cost most of a file's parsing. Unhashable cells (none in ONS's files) are worked out every time."""

    def __init__(self) -> None:
        self.codes: dict[tuple[Any, Any], str | None] = {}
        self.instants: dict[Any, int | None] = {}

    def code(self, id_value: Any, name_value: Any) -> str | None:
        key = (id_value, name_value)
        try:
            return self.codes[key]
        except KeyError:
            code = self.codes[key] = subsystem_code(id_value, name_value)
            return code
        except TypeError:
            return subsystem_code(id_value, name_value)

    def instant(self, cell: Any) -> int | None:
        try:
            return self.instants[cell]
        except KeyError:
            ts = self.instants[cell] = local_ms(wall_clock(cell))  # a bad cell raises, and is not remembered
            return ts
        except TypeError:
            return local_ms(wall_clock(cell))


def to_rows(columns: dict[str, int], time_col: int, id_col: int | None, name_col: int | None,
            cells: list[list[Any]]) -> tuple[list[Row], ParseStats]:
    """Raw cells of one file into rows; ``columns`` maps each stored field to its cell index."""
    stats = ParseStats()
    out: list[Row] = []
    memo = _Memo()
    for raw in cells:
        stats.rows += 1
        try:
            code = memo.code(raw[id_col] if id_col is not None else None,
                             raw[name_col] if name_col is not None else None)
            if code is None:
                shown = raw[id_col] if id_col is not None else raw[name_col] if name_col is not None else None
                raise OnsFormatError(f"subsistema desconhecido: {shown!r}")
            if code == SIN:
                stats.sin_rows += 1
                continue
            ts = memo.instant(raw[time_col])
            if ts is None:
                stats.dst_placeholders += 1
                continue
            values: dict[str, float] = {}
            missing = 0
            for name, index in columns.items():
                number = parse_number(raw[index] if index < len(raw) else None)
                if number is None:
                    missing += 1
                else:
                    values[name] = number
        except (OnsFormatError, IndexError) as exc:
            stats.bad += 1
            if len(stats.errors) < 10:
                stats.errors.append(f"linha {stats.rows}: {exc}")
            continue
        if not values:
            stats.empty += 1
            continue
        stats.empty_values += missing
        stats.kept += 1
        out.append(Row(ts, code, values))
    return out, stats
