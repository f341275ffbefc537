"""One ONS data file (CSV or Parquet bytes) into typed rows (sans-IO: bytes in, rows out).

CSV: ``;``-separated, ``.`` decimal, UTF-8 (a byte-order mark is tolerated though ONS writes none), one header
row. Read with the standard library's ``csv`` module, cell by cell, because the quirks are per cell (``0E-8``,
empty strings in "not null" columns, padded ids) and a typed CSV reader would have to be told to give up its
type inference anyway.

Parquet: read with **pyarrow** (``pyarrow.parquet``), chosen over polars because

* the real files store ``din_instante`` as INT96 timestamps: pyarrow reads them (and the dev stack's fake writes
  them with the same library, so the quirk is reproduced byte for byte rather than approximated);
* each yearly file has its own schema (values as text in some years, doubles in others): pyarrow hands back the
  column types as written, and :mod:`backend.ons.records` casts per cell, so no schema has to be declared or
  unified across years;
* it is the reference implementation of the format, with no query engine CDS would not use.

Either way the header is matched by name (datasets.py), so reordered or added columns change nothing.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Final, Literal

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from backend.ons.datasets import ID_COLUMNS, NAME_COLUMNS, TIME_COLUMNS, Dataset, find_column, normalise_header
from backend.ons.records import OnsFormatError, ParseStats, Row, to_rows

FileFormat = Literal["csv", "parquet"]
PARQUET_MAGIC: Final = b"PAR1"


class ParsedFile(msgspec.Struct):
    format: FileFormat
    rows: list[Row]
    stats: ParseStats
    header: list[str]


def sniff(data: bytes) -> FileFormat:
    """Parquet files start and end with ``PAR1``; anything else is read as CSV."""
    return "parquet" if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC else "csv"


def csv_cells(data: bytes) -> tuple[list[str], list[list[Any]]]:
    """Header and cell rows of a ``;`` CSV; blank lines are skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # older exports; every ONS header and code is ASCII either way
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header: list[str] | None = None
    cells: list[list[Any]] = []
    for line in reader:
        if not line or all(not c.strip() for c in line):
            continue
        if header is None:
            header = normalise_header(line)
            continue
        cells.append(list(line))
    if header is None:
        raise OnsFormatError("arquivo CSV vazio")
    return header, cells


def parquet_cells(data: bytes) -> tuple[list[str], list[list[Any]]]:
    """Header and cell rows of a Parquet file, each column as pyarrow converts it to Python objects."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise OnsFormatError(f"arquivo Parquet ilegível: {exc}") from exc
    header = normalise_header(list(table.column_names))
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return header, [list(cells) for cells in zip(*columns, strict=True)]


def parse_file(dataset: Dataset, data: bytes) -> ParsedFile:
    """Rows of ``dataset`` from one file; raises OnsFormatError when the header lacks what the dataset needs."""
    fmt = sniff(data)
    header, cells = parquet_cells(data) if fmt == "parquet" else csv_cells(data)
    time_col = find_column(header, TIME_COLUMNS)
    id_col = find_column(header, ID_COLUMNS)
    name_col = find_column(header, NAME_COLUMNS)
    columns = {name: i for name, accepted in dataset.values.items()
               if (i := find_column(header, accepted)) is not None}
    if time_col is None or (id_col is None and name_col is None) or not columns:
        raise OnsFormatError(f"cabeçalho inesperado para {dataset.slug}: {';'.join(header)[:200]}")
    rows, stats = to_rows(columns, time_col, id_col, name_col, cells)
    return ParsedFile(format=fmt, rows=rows, stats=stats, header=header)
