"""ANEEL open-data records as typed structs, parsed from CKAN ``datastore_search`` rows.

ANEEL publishes every value as text: decimals with a comma and no thousands separator (``"593,08"``), zero as
``",00"``, dates as ``"YYYY-MM-DD"``, literal ``"Não se aplica"`` instead of null. This module is the only place
that knows those formats; everything downstream works with :class:`decimal.Decimal` and :class:`datetime.date`
and with units spelled out (``R$/MWh`` vs ``R$/kW``, decided by ``DscUnidadeTerciaria``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import msgspec

TARIFFS_RESOURCE: Final = "fcf2906c-7c32-4b9b-a637-054e7a5234f4"
BANDEIRA_ACIONAMENTO_RESOURCE: Final = "0591b8f6-fe54-437b-b72b-1aa2efd46e42"
BANDEIRA_ADICIONAL_RESOURCE: Final = "5879ca80-b3bd-45b1-a135-d9b77c1d5b36"
COMPONENTS_PACKAGE: Final = "componentes-tarifarias"
"""Componentes Tarifárias: one DataStore resource per year, named ``componentes-tarifarias-{YYYY}``."""
FIO_B: Final = "TUSD_FioB"
"""``DscComponenteTarifario`` of the distribution-wires share that GD II pays on compensated energy."""

NOT_APPLICABLE: Final = "Não se aplica"
APPLICATION_BASE: Final = "Tarifa de Aplicação"
FLAGS: Final = ("Verde", "Amarela", "Vermelha P1", "Vermelha P2", "Escassez Hídrica")

TusdUnit = Literal["R$/MWh", "R$/kW"]

_DECIMAL_RE: Final = re.compile(r"^-?(\d{1,3}(\.\d{3})+|\d*),\d+$|^-?\d+$")


class AneelFormatError(ValueError):
    """A value or record that does not follow ANEEL's published format; the record is skipped and counted."""

    def __init__(self, message: str, *, field: str = "", value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def parse_decimal(text: str, *, field: str = "") -> Decimal:
    """``"593,08"`` -> 593.08, ``",00"`` -> 0.00, ``"1172,93"`` -> 1172.93.

    A dot is accepted only as a thousands separator next to a decimal comma (``"1.361,78"``), which some clients
    defend against although ANEEL's file has none; a bare ``"1.5"`` is ambiguous and rejected.
    """
    s = text.strip()
    if not _DECIMAL_RE.match(s):
        raise AneelFormatError(f"{field or 'valor'}: número inválido {text!r}", field=field, value=text)
    s = s.replace(".", "").replace(",", ".")
    if s.startswith("."):
        s = "0" + s
    elif s.startswith("-."):
        s = "-0" + s[1:]
    try:
        return Decimal(s)
    except InvalidOperation as exc:  # pragma: no cover - the regex already filters these
        raise AneelFormatError(f"{field}: número inválido {text!r}", field=field, value=text) from exc


def parse_date(text: str, *, field: str = "") -> dt.date:
    """ISO ``YYYY-MM-DD`` (a ``T00:00:00`` suffix, as CKAN renders timestamp columns, is tolerated)."""
    s = text.strip()[:10]
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise AneelFormatError(f"{field or 'data'}: data inválida {text!r}", field=field, value=text) from exc


def _text(row: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise AneelFormatError(f"campo ausente: {key}", field=key)
        return ""
    if not isinstance(value, str):
        value = str(value)
    return value.strip()


class TariffRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of "Tarifas de Aplicação das Distribuidoras" with units made explicit.

    ``te_rs_mwh`` is always R$/MWh. ``tusd`` is R$/MWh when ``tusd_unit == "R$/MWh"`` (energy) and R$/kW per
    month when ``"R$/kW"`` (demand, group A). Validity is inclusive on both ends, as ANEEL publishes it.
    """

    reh: str
    distributor: str
    cnpj: str
    start: dt.date
    end: dt.date
    base: str
    subgroup: str
    modality: str
    klass: str
    subclass: str
    detail: str
    posto: str
    tusd: Decimal
    tusd_unit: TusdUnit
    te_rs_mwh: Decimal
    accessing_agent: str = NOT_APPLICABLE
    generated: dt.date | None = None

    @property
    def energy_rs_kwh(self) -> Decimal:
        """(TUSD + TE) / 1000 in R$/kWh; only meaningful for energy (MWh) rows."""
        if self.tusd_unit != "R$/MWh":
            raise ValueError("a TUSD in R$/kW is a demand price, not an energy price")
        return (self.tusd + self.te_rs_mwh) / 1000

    def natural_key(self) -> tuple[str, ...]:
        """What identifies a tariff row across pulls: the same key with new values is a change, not a new row."""
        return (
            self.cnpj,
            self.base,
            self.subgroup,
            self.modality,
            self.klass,
            self.subclass,
            self.detail,
            self.posto,
            self.tusd_unit,
            self.accessing_agent,
            self.start.isoformat(),
            self.end.isoformat(),
        )

    def covers(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


class BandeiraMonth(msgspec.Struct, frozen=True, kw_only=True):
    """"Bandeira – Acionamento": the flag in force in a calendar month and its adder (R$/MWh)."""

    month: dt.date
    """First day of the month (``DatCompetencia``)."""
    flag: str
    adder_rs_mwh: Decimal
    generated: dt.date | None = None


class BandeiraAdder(msgspec.Struct, frozen=True, kw_only=True):
    """"Bandeira – Adicional": the adder of one flag set by one resolution, from ``start`` on (R$/MWh)."""

    resolution: str
    start: dt.date
    flag: str
    adder_rs_mwh: Decimal
    generated: dt.date | None = None


class ComponentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of "Componentes Tarifárias": a component (``TUSD_FioB``, ``TE_ENERGIA``…) of a tariff, R$/MWh."""

    reh: str
    distributor: str
    cnpj: str
    start: dt.date
    end: dt.date
    base: str
    subgroup: str
    modality: str
    klass: str
    subclass: str
    detail: str
    posto: str
    unit: str
    component: str
    value: Decimal
    accessing_agent: str = NOT_APPLICABLE

    def natural_key(self) -> tuple[str, ...]:
        return (self.cnpj, self.component, self.base, self.subgroup, self.modality, self.klass, self.subclass,
                self.detail, self.posto, self.unit, self.accessing_agent, self.start.isoformat(),
                self.end.isoformat())

    def covers(self, day: dt.date) -> bool:
        return self.start <= day <= self.end


_SCIENTIFIC_RE: Final = re.compile(r"^-?\d*,?\d+E-?\d+$", re.IGNORECASE)


def parse_component_value(text: str, *, field: str = "VlrComponenteTarifario") -> Decimal:
    """Like :func:`parse_decimal`, plus the scientific notation the components file sometimes carries
    (``"8,9999999999999995E-9"``), rounded to the file's 9 decimals."""
    s = text.strip()
    if _SCIENTIFIC_RE.match(s):
        return Decimal(s.replace(",", ".")).quantize(Decimal("1e-9"))
    return parse_decimal(s, field=field)


def parse_component(row: Mapping[str, Any]) -> ComponentRecord:
    """A ``datastore_search`` row of a ``componentes-tarifarias-YYYY`` resource -> :class:`ComponentRecord`.

    ``NumCPFCNPJ`` may have lost its leading zeros (an integer in ANEEL's Parquet), so it is padded back."""
    start = parse_date(_text(row, "DatInicioVigencia"), field="DatInicioVigencia")
    end = parse_date(_text(row, "DatFimVigencia"), field="DatFimVigencia")
    if end < start:
        raise AneelFormatError(f"vigência invertida {start}..{end}", field="DatFimVigencia", value=str(end))
    return ComponentRecord(
        reh=" ".join(_text(row, "DscResolucaoHomologatoria", required=False).split()),
        distributor=_text(row, "SigNomeAgente"),
        cnpj=re.sub(r"\D", "", _text(row, "NumCPFCNPJ")).zfill(14),
        start=start,
        end=end,
        base=_text(row, "DscBaseTarifaria"),
        subgroup=_text(row, "DscSubGrupoTarifario"),
        modality=_text(row, "DscModalidadeTarifaria"),
        klass=_text(row, "DscClasseConsumidor"),
        subclass=_text(row, "DscSubClasseConsumidor"),
        detail=_text(row, "DscDetalheConsumidor"),
        posto=_text(row, "DscPostoTarifario"),
        unit=_text(row, "DscUnidade"),
        component=_text(row, "DscComponenteTarifario"),
        value=parse_component_value(_text(row, "VlrComponenteTarifario")),
        accessing_agent=_text(row, "SigNomeAgenteAcessante", required=False) or NOT_APPLICABLE,
    )


def parse_tariff(row: Mapping[str, Any]) -> TariffRecord:
    """A ``datastore_search`` row (or CSV row) of the tariffs resource -> :class:`TariffRecord`."""
    unit_raw = _text(row, "DscUnidadeTerciaria")
    if unit_raw.lower() == "mwh":
        unit: TusdUnit = "R$/MWh"
    elif unit_raw.lower() == "kw":
        unit = "R$/kW"
    else:
        raise AneelFormatError(f"unidade desconhecida {unit_raw!r}", field="DscUnidadeTerciaria", value=unit_raw)
    start = parse_date(_text(row, "DatInicioVigencia"), field="DatInicioVigencia")
    end = parse_date(_text(row, "DatFimVigencia"), field="DatFimVigencia")
    if end < start:
        raise AneelFormatError(f"vigência invertida {start}..{end}", field="DatFimVigencia", value=str(end))
    cnpj = re.sub(r"\D", "", _text(row, "NumCNPJDistribuidora")).zfill(14)
    generated_raw = _text(row, "DatGeracaoConjuntoDados", required=False)
    return TariffRecord(
        reh=" ".join(_text(row, "DscREH", required=False).split()),
        distributor=_text(row, "SigAgente"),
        cnpj=cnpj,
        start=start,
        end=end,
        base=_text(row, "DscBaseTarifaria"),
        subgroup=_text(row, "DscSubGrupo"),
        modality=_text(row, "DscModalidadeTarifaria"),
        klass=_text(row, "DscClasse"),
        subclass=_text(row, "DscSubClasse"),
        detail=_text(row, "DscDetalhe"),
        posto=_text(row, "NomPostoTarifario"),
        tusd=parse_decimal(_text(row, "VlrTUSD"), field="VlrTUSD"),
        tusd_unit=unit,
        te_rs_mwh=parse_decimal(_text(row, "VlrTE"), field="VlrTE"),
        accessing_agent=_text(row, "SigAgenteAcessante", required=False) or NOT_APPLICABLE,
        generated=parse_date(generated_raw, field="DatGeracaoConjuntoDados") if generated_raw else None,
    )


def parse_bandeira_month(row: Mapping[str, Any]) -> BandeiraMonth:
    month = parse_date(_text(row, "DatCompetencia"), field="DatCompetencia")
    generated_raw = _text(row, "DatGeracaoConjuntoDados", required=False)
    return BandeiraMonth(
        month=month.replace(day=1),
        flag=_text(row, "NomBandeiraAcionada"),
        adder_rs_mwh=parse_decimal(_text(row, "VlrAdicionalBandeira"), field="VlrAdicionalBandeira"),
        generated=parse_date(generated_raw) if generated_raw else None,
    )


def parse_bandeira_adder(row: Mapping[str, Any]) -> BandeiraAdder:
    generated_raw = _text(row, "DatGeracaoConjuntoDados", required=False)
    return BandeiraAdder(
        resolution=" ".join(_text(row, "DscResolucao").split()),
        start=parse_date(_text(row, "DatVigencia"), field="DatVigencia"),
        flag=_text(row, "NomBandeiraAcionada"),
        adder_rs_mwh=parse_decimal(
            _text(row, "VlrAdicionalBandeiraRSMWh"), field="VlrAdicionalBandeiraRSMWh"
        ),
        generated=parse_date(generated_raw) if generated_raw else None,
    )
