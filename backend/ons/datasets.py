"""The ONS datasets CDS reads, their columns across vintages, and the grid's subsystems.

ONS publishes each dataset as one file per year (CSV and, for most, Parquet), discovered through its CKAN portal
(docs/ons.md). The columns are the same in spirit across the years but not in the letter: names of subsystems
changed (``SUDESTE`` became ``SUDESTE/CENTRO-OESTE`` in 2026 in one dataset, title case in another), ids were
padded to three characters in the 2026 files, and columns get added. So every file's header is read on its own
and matched against the accepted spellings below; nothing relies on column positions.

The SIN row: the energy balance carries a fifth row per hour for the whole interconnected system, the exact sum of
the four subsystems. Summing over all rows would count every MWh twice, so CDS never stores it: "SIN" is always
computed as the sum of SE, S, NE and N (:data:`SIN`).
"""

from __future__ import annotations

import unicodedata
from typing import Final, Literal

import msgspec

from backend.store.layout import ONS_BALANCE, ONS_CMO, ONS_LOAD
from protocol.timebase import HOUR_MS, MINUTE_MS

Subsystem = Literal["SE", "S", "NE", "N"]
SUBSYSTEMS: Final[tuple[Subsystem, ...]] = ("SE", "S", "NE", "N")
SIN: Final = "SIN"
"""The whole interconnected system: always the sum of :data:`SUBSYSTEMS`, never ONS's own SIN row."""

SUBSYSTEM_NAMES: Final[dict[str, str]] = {
    "SE": "Sudeste/Centro-Oeste", "S": "Sul", "NE": "Nordeste", "N": "Norte", SIN: "Sistema Interligado Nacional"}

GENERATION: Final = ("hidraulica", "termica", "eolica", "solar")
"""Generation sources of the balance (térmica includes nuclear and biomass: ONS does not split them there)."""
RENEWABLE: Final = ("hidraulica", "eolica", "solar")
BALANCE_FIELDS: Final = (*GENERATION, "carga", "intercambio")
"""Every value of a balance row, as stored (the ``source`` tag); ``intercambio`` > 0 is a net export."""


def _fold(text: str) -> str:
    """Upper case without accents, spaces collapsed: how subsystem names and headers are compared."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(plain.upper().split())


_BY_NAME: Final = {
    "SUDESTE/CENTRO-OESTE": "SE", "SUDESTE": "SE", "SUDESTE / CENTRO-OESTE": "SE", "SUDESTE/CENTRO OESTE": "SE",
    "SECO": "SE", "SUL": "S", "NORDESTE": "NE", "NORTE": "N", "SISTEMA INTERLIGADO NACIONAL": SIN, "SIN": SIN,
}


def subsystem_code(id_value: object, name_value: object = None) -> str | None:
    """The subsystem code (SE, S, NE, N or SIN) from a row's id, else its name; None when neither is known.

    Ids are trimmed (``'N  '`` in the 2026 files) and upper-cased; names are compared without accents, case or
    surrounding spaces (``' NORDESTE'``, ``Sudeste/Centro-Oeste``, ``SUDESTE``).
    """
    for value, table in ((id_value, None), (name_value, _BY_NAME)):
        if value is None:
            continue
        text = _fold(str(value))
        if table is None:
            if text in SUBSYSTEMS or text == SIN:
                return text
            if text == "SECO":
                return "SE"
        elif text in table:
            return table[text]
    return None


class Dataset(msgspec.Struct, frozen=True):
    """One ONS dataset as CDS reads it."""

    key: str
    """Short name used in reports, file states and the fake (``balanco``, ``carga``, ``cmo``)."""
    slug: str
    """CKAN package name (``package_show?id=...``)."""
    title: str
    measurement: str
    step_ms: int
    """Length of one row's interval (rows are labelled with its start)."""
    values: dict[str, tuple[str, ...]]
    """Stored field -> accepted header spellings (lower case), first match wins."""
    has_sin_row: bool = False
    value_field: str = "mwh"
    """Field name in InfluxDB; the balance stores one point per value with the value's name as ``source``."""


TIME_COLUMNS: Final = ("din_instante", "dat_instante", "din_referencia")
ID_COLUMNS: Final = ("id_subsistema", "cod_subsistema", "id_subsistema_origem")
NAME_COLUMNS: Final = ("nom_subsistema",)

BALANCE: Final = Dataset(
    key="balanco", slug="balanco-energia-subsistema", title="Balanço de Energia nos Subsistemas",
    measurement=ONS_BALANCE, step_ms=HOUR_MS, has_sin_row=True,
    values={
        "hidraulica": ("val_gerhidraulica", "val_gerhidro", "val_gerhidroeletrica"),
        "termica": ("val_gertermica", "val_gertermo", "val_gertermoeletrica"),
        "eolica": ("val_gereolica", "val_gereolicas"),
        "solar": ("val_gersolar", "val_gerfotovoltaica", "val_gersolarfotovoltaica"),
        "carga": ("val_carga", "val_cargaenergia"),
        "intercambio": ("val_intercambio", "val_intercambiomwmed"),
    })
LOAD_CURVE: Final = Dataset(
    key="carga", slug="curva-carga", title="Curva de Carga Horária", measurement=ONS_LOAD, step_ms=HOUR_MS,
    values={"carga": ("val_cargaenergiahomwmed", "val_cargaenergiamwmed", "val_carga")})
CMO: Final = Dataset(
    key="cmo", slug="cmo-semi-horario", title="Custo Marginal de Operação Semi-horário", measurement=ONS_CMO,
    step_ms=30 * MINUTE_MS, value_field="rs_mwh",
    values={"cmo": ("val_cmo", "val_cmosemihorario", "val_cmomedia")})

DATASETS: Final[dict[str, Dataset]] = {d.key: d for d in (BALANCE, LOAD_CURVE, CMO)}


def find_column(header: list[str], accepted: tuple[str, ...]) -> int | None:
    """Index of the first accepted spelling present in a (normalised) header, or None."""
    for name in accepted:
        if name in header:
            return header.index(name)
    return None


def normalise_header(names: list[str]) -> list[str]:
    """Header cells trimmed, lower-cased and without a byte-order mark."""
    return [str(n).replace("\ufeff", "").strip().lower() for n in names]
