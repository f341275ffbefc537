"""The fake ONS's files: the model's numbers written as ONS writes them, vintage by vintage (CSV and Parquet).

What each vintage looks like follows the research notes (docs/ons.md), quirk by quirk:

* balance (``BALANCO_ENERGIA_SUBSISTEMA_{YYYY}``): five rows per hour in the order N, NE, S, SE, SIN; the SIN
  row is the exact sum of the other four; the 2026 file pads ids to three characters (``'N  '``); numbers as a
  database exports them (``29274.58299999``, zero as ``0E-8``); for the hour that daylight saving time skipped,
  a placeholder row per subsystem (``0E-8`` generation, empty load and interchange); the hour repeated when DST
  ended appears once;
* load curve (``CURVA_CARGA_{YYYY}``): no SIN row; ``SUDESTE`` became ``SUDESTE/CENTRO-OESTE`` in 2026; values
  are text in the 2015-2024 Parquet files and doubles from 2025; a few empty values in a column documented as
  "not null"; an empty value for the skipped DST hour;
* CMO (``CMO_SEMIHORARIO_{YYYY}``, from 2020): 48 rows per day and subsystem, some days missing, negative values
  in the Nordeste; Parquet only from 2024 here.

Constructed, not captured (labelled so because the notes name the kind of quirk but give no example of it in
these datasets): the balance files up to 2010 put ``din_instante`` first and call the solar column
``val_gerfotovoltaica``; the load-curve files up to 2014 call the value ``val_cargaenergiamwmed``; the 2026 CMO
file has a leading space before each subsystem name (as the 2026 interchange files do).

Parquet timestamps are written as INT96, as in ONS's files: the wall clock with no zone.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterator, Mapping
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from devstack.ons_model import LITERAL_LOAD_CURVE, SinModel
from protocol.timebase import TZ

ORDER: Final = ("N", "NE", "S", "SE")
NAMES: Final = {"SE": "SUDESTE/CENTRO-OESTE", "S": "SUL", "NE": "NORDESTE", "N": "NORTE",
                "SIN": "SISTEMA INTERLIGADO NACIONAL"}
BALANCE_VALUES: Final = ("val_gerhidraulica", "val_gertermica", "val_gereolica", "val_gersolar", "val_carga",
                         "val_intercambio")
_MODEL_FIELDS: Final = ("hidraulica", "termica", "eolica", "solar", "carga", "intercambio")
Table = tuple[list[str], list[list[Any]]]
Revisions = Mapping[tuple[str, str, str], float | None]
"""(wall time ``YYYY-MM-DD HH:MM:SS``, subsystem, column) -> revised value (None = emptied)."""


def exists(wall: dt.datetime) -> bool:
    """Whether a Brasília wall-clock time existed (False inside the hour skipped by DST)."""
    aware = wall.replace(tzinfo=TZ)
    return aware.astimezone(dt.UTC).astimezone(TZ).replace(tzinfo=None) == wall


def _days(year: int, until: dt.date) -> Iterator[dt.date]:
    day = dt.date(year, 1, 1)
    while day.year == year and day <= until:
        yield day
        day += dt.timedelta(days=1)


def _revise(rows: list[list[Any]], header: list[str], revisions: Revisions, *, id_col: int, time_col: int) -> None:
    if not revisions:
        return
    index = {name: i for i, name in enumerate(header)}
    for row in rows:
        wall = row[time_col].strftime("%Y-%m-%d %H:%M:%S")
        for (when, sub, column), value in revisions.items():
            if when == wall and row[id_col].strip() == sub and column in index:
                row[index[column]] = value


def balance_table(model: SinModel, year: int, until: dt.date, revisions: Revisions = {}) -> Table:  # noqa: B006
    old = year <= 2010
    solar = "val_gerfotovoltaica" if old else "val_gersolar"
    values = [*BALANCE_VALUES[:3], solar, *BALANCE_VALUES[4:]]
    header = ["din_instante", "id_subsistema", "nom_subsistema", *values] if old else \
        ["id_subsistema", "nom_subsistema", "din_instante", *values]
    rows: list[list[Any]] = []
    pad = 3 if year >= 2026 else 0
    for day in _days(year, until):
        for hour, per in enumerate(model.day(day)):
            wall = dt.datetime(day.year, day.month, day.day, hour)
            if not exists(wall):
                cells: dict[str, list[float | None]] = {s: [0.0, 0.0, 0.0, 0.0, None, None] for s in (*ORDER, "SIN")}
            else:
                cells = {s: [per[s][f] for f in _MODEL_FIELDS] for s in ORDER}
                cells["SIN"] = [sum(per[s][f] for s in ORDER) for f in _MODEL_FIELDS]
            for s in (*ORDER, "SIN"):
                ident = s.ljust(pad)
                rows.append([wall, ident, NAMES[s], *cells[s]] if old else [ident, NAMES[s], wall, *cells[s]])
    _revise(rows, header, revisions, id_col=1 if old else 0, time_col=0 if old else 2)
    return header, rows


def load_curve_table(model: SinModel, year: int, until: dt.date, revisions: Revisions = {}) -> Table:  # noqa: B006
    header = ["id_subsistema", "nom_subsistema", "din_instante",
              "val_cargaenergiamwmed" if year <= 2014 else "val_cargaenergiahomwmed"]
    names = dict(NAMES, SE="SUDESTE/CENTRO-OESTE" if year >= 2026 else "SUDESTE")
    rnd = random.Random(f"empty-load-{year}")
    blanks = {(rnd.randrange(0, 360), rnd.randrange(0, 24), rnd.choice(ORDER)) for _ in range(3)}
    rows: list[list[Any]] = []
    for day in _days(year, until):
        for hour, per in enumerate(model.day(day)):
            wall = dt.datetime(day.year, day.month, day.day, hour)
            for s in ORDER:
                key = (wall.strftime("%Y-%m-%d %H:%M:%S"), s)
                value: float | None = LITERAL_LOAD_CURVE.get(key, per[s]["carga"] * 1.003)
                if not exists(wall) or (day.timetuple().tm_yday - 1, hour, s) in blanks:
                    value = None
                rows.append([s, names[s], wall, value])
    _revise(rows, header, revisions, id_col=0, time_col=2)
    return header, rows


def cmo_table(model: SinModel, year: int, until: dt.date, revisions: Revisions = {}) -> Table:  # noqa: B006
    header = ["id_subsistema", "nom_subsistema", "din_instante", "val_cmo"]
    names = {s: (" " if year >= 2026 else "") + NAMES[s].split("/")[0] for s in ORDER}
    missing = model.missing_cmo_days(year)
    rows: list[list[Any]] = []
    for day in _days(year, until):
        if day in missing:
            continue
        for half, per in enumerate(model.cmo_day(day)):
            wall = dt.datetime(day.year, day.month, day.day, half // 2, 30 * (half % 2))
            rows.extend([s, names[s], wall, per[s]] for s in ORDER)
    _revise(rows, header, revisions, id_col=0, time_col=2)
    return header, rows


def _cell(dataset: str, year: int, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str):
        return value
    if dataset == "balanco":
        return "0E-8" if value == 0 else f"{value:.8f}"
    if dataset == "cmo":
        return f"{value:.2f}"
    return f"{value:.3f}" if year <= 2024 else repr(round(value, 9))


def to_csv(dataset: str, year: int, table: Table) -> bytes:
    """``;``-separated, UTF-8 without BOM, LF line ends, no quoting (as ONS's files)."""
    header, rows = table
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(dataset, year, v) for v in row])
    return out.getvalue().encode("utf-8")


def to_parquet(dataset: str, year: int, table: Table) -> bytes:
    """Parquet with INT96 timestamps; the load curve's values are text in 2015-2024, doubles otherwise."""
    header, rows = table
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in header]
    arrays = []
    for name, values in zip(header, columns, strict=True):
        if name == "din_instante":
            arrays.append(pa.array(values, type=pa.timestamp("ms")))
        elif name.startswith(("id_", "nom_")):
            arrays.append(pa.array(values, type=pa.string()))
        elif dataset == "carga" and 2015 <= year <= 2024:
            arrays.append(pa.array([None if v is None else f"{v:.3f}" for v in values], type=pa.string()))
        else:
            arrays.append(pa.array(values, type=pa.float64()))
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays, names=header), buf, use_deprecated_int96_timestamps=True, compression="snappy")
    return buf.getvalue()
