"""Which ANEEL tariff and which bandeira apply on a given day, with ANEEL's data quirks handled.

The tariffs resource is not a clean time series:

* **overlapping vigências**: several rows of one key can cover the same day (two acts for one period, the same
  REH repeated with different end dates). Rule used by public clients and here: the latest
  ``DatInicioVigencia`` wins; ties go to the later end, then to the row published last.
* **split on 1 January**: one REH is published as two rows (``…-12-31`` and ``01-01…``) with equal values;
  selection per day is unaffected and :func:`merge_periods` folds them back for display.
* **expired, no successor yet**: the newest row ended before the day asked for (the next REH is not loaded
  yet). The newest row is still used, marked ``expired`` so the bill says it is provisional.
* **renamed distributor**: identity is the CNPJ, not ``SigAgente`` (RGE SUL -> RGE); a sigla given in the site
  configuration is resolved to its CNPJ, and all rows of that CNPJ are used whatever their sigla.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal

import msgspec

from backend.aneel.records import APPLICATION_BASE, NOT_APPLICABLE, BandeiraAdder, BandeiraMonth, TariffRecord


class TariffError(Exception):
    """Base class for tariff lookup failures."""


class TariffNotFound(TariffError):
    """No row of the requested key starts on or before the day asked for (or the distributor is unknown)."""


class TariffChoice(msgspec.Struct, frozen=True):
    """The row used for one posto on one day, and why."""

    record: TariffRecord
    expired: bool = False
    """True when the newest row had already ended: the successor REH is not published yet."""
    candidates: int = 1
    """How many rows covered the day (more than one = overlapping vigências)."""


class Period(msgspec.Struct, frozen=True):
    """A run of days with the same values (1-January splits folded)."""

    start: dt.date
    end: dt.date
    tusd: Decimal
    te_rs_mwh: Decimal
    reh: str


class TariffBook:
    """All tariff rows known for one or more distributors, indexed for lookups by CNPJ."""

    def __init__(self, records: Iterable[TariffRecord]) -> None:
        self._records: list[TariffRecord] = list(records)

    @property
    def records(self) -> Sequence[TariffRecord]:
        return self._records

    def resolve_cnpj(self, distributor: str) -> str:
        """A CNPJ (digits, any punctuation) or a sigla (case-insensitive) -> CNPJ."""
        digits = "".join(ch for ch in distributor if ch.isdigit())
        if len(digits) == 14 and any(r.cnpj == digits for r in self._records):
            return digits
        wanted = distributor.strip().casefold()
        named = [r for r in self._records if r.distributor.casefold() == wanted]
        if not named:
            raise TariffNotFound(f"distribuidora desconhecida: {distributor!r}")
        return max(named, key=lambda r: r.start).cnpj

    def current_name(self, cnpj: str) -> str:
        """The sigla on the newest row of this CNPJ (after a rename, the new name)."""
        rows = [r for r in self._records if r.cnpj == cnpj]
        if not rows:
            raise TariffNotFound(f"CNPJ sem tarifas: {cnpj}")
        return max(rows, key=lambda r: (r.start, r.generated or dt.date.min)).distributor

    def rows(
        self,
        cnpj: str,
        *,
        subgroup: str,
        modality: str,
        subclass: str,
        klass: str = "Residencial",
        detail: str = NOT_APPLICABLE,
        base: str = APPLICATION_BASE,
        posto: str | None = None,
    ) -> list[TariffRecord]:
        """Energy rows (R$/MWh) of one key, every vigência, in publication order."""
        return [
            r
            for r in self._records
            if r.cnpj == cnpj
            and r.subgroup == subgroup
            and r.modality == modality
            and r.subclass == subclass
            and r.klass == klass
            and r.detail == detail
            and r.base == base
            and r.tusd_unit == "R$/MWh"
            and (posto is None or r.posto == posto)
        ]

    def energy_tariffs(
        self,
        cnpj: str,
        day: dt.date,
        *,
        subgroup: str,
        modality: str,
        subclass: str = "Residencial",
        klass: str = "Residencial",
        detail: str = NOT_APPLICABLE,
    ) -> dict[str, TariffChoice]:
        """The row in force on ``day`` for each posto of the key (``"Não se aplica"`` for Convencional)."""
        rows = self.rows(cnpj, subgroup=subgroup, modality=modality, subclass=subclass, klass=klass, detail=detail)
        if not rows:
            raise TariffNotFound(
                f"sem tarifa {subgroup}/{modality}/{subclass} para o CNPJ {cnpj}"
            )
        by_posto: dict[str, list[tuple[int, TariffRecord]]] = {}
        for i, r in enumerate(rows):
            by_posto.setdefault(r.posto, []).append((i, r))
        out: dict[str, TariffChoice] = {}
        for posto, indexed in by_posto.items():
            choice = choose(indexed, day)
            if choice is not None:
                out[posto] = choice
        if not out:
            raise TariffNotFound(f"nenhuma vigência de {subgroup}/{modality} começa até {day.isoformat()}")
        return out


def choose(indexed: Sequence[tuple[int, TariffRecord]], day: dt.date) -> TariffChoice | None:
    """Latest start wins among rows covering ``day``; if none covers it, the newest row that already started."""
    covering = [(r.start, r.end, i, r) for i, r in indexed if r.covers(day)]
    if covering:
        best = max(covering, key=lambda t: (t[0], t[1], t[2]))
        return TariffChoice(record=best[3], expired=False, candidates=len(covering))
    started = [(r.start, r.end, i, r) for i, r in indexed if r.start <= day]
    if not started:
        return None
    best = max(started, key=lambda t: (t[0], t[1], t[2]))
    return TariffChoice(record=best[3], expired=best[3].end < day, candidates=0)


def merge_periods(rows: Iterable[TariffRecord]) -> list[Period]:
    """Contiguous rows with equal values folded into one period (undoes the 1-January split)."""
    ordered = sorted(rows, key=lambda r: (r.start, r.end))
    out: list[Period] = []
    for r in ordered:
        if out:
            last = out[-1]
            contiguous = r.start <= last.end + dt.timedelta(days=1)
            if contiguous and last.tusd == r.tusd and last.te_rs_mwh == r.te_rs_mwh:
                out[-1] = Period(start=last.start, end=max(last.end, r.end), tusd=r.tusd, te_rs_mwh=r.te_rs_mwh,
                                 reh=last.reh)
                continue
        out.append(Period(start=r.start, end=r.end, tusd=r.tusd, te_rs_mwh=r.te_rs_mwh, reh=r.reh))
    return out


class FlagChoice(msgspec.Struct, frozen=True):
    """The bandeira of one month and where its value came from."""

    month: dt.date
    flag: str
    adder_rs_mwh: Decimal
    source: str
    """``"acionamento"`` (published for that month) or ``"estimada"`` (not yet published: last known flag)."""
    resolution: str = ""


class BandeiraBook:
    """Monthly flags (acionamento) and the adder table (adicional)."""

    def __init__(self, months: Iterable[BandeiraMonth], adders: Iterable[BandeiraAdder] = ()) -> None:
        self._months = {m.month: m for m in sorted(months, key=lambda m: (m.month, m.generated or dt.date.min))}
        self._adders = sorted(adders, key=lambda a: a.start)

    @property
    def months(self) -> list[BandeiraMonth]:
        return [self._months[k] for k in sorted(self._months)]

    @property
    def adders(self) -> list[BandeiraAdder]:
        return list(self._adders)

    def adder_for(self, flag: str, day: dt.date) -> BandeiraAdder | None:
        """The adder of ``flag`` set by the newest resolution in force on ``day``."""
        found = [a for a in self._adders if a.flag == flag and a.start <= day]
        return found[-1] if found else None

    def flag_for(self, day: dt.date) -> FlagChoice:
        """The flag of the month containing ``day``.

        ANEEL announces a month's flag near the end of the previous month; for a month not yet published the last
        published flag is assumed (``source="estimada"``) with the adder in force for it on that day.
        """
        month = day.replace(day=1)
        m = self._months.get(month)
        if m is not None:
            adder = self.adder_for(m.flag, month)
            return FlagChoice(month=month, flag=m.flag, adder_rs_mwh=m.adder_rs_mwh, source="acionamento",
                              resolution=adder.resolution if adder else "")
        earlier = [k for k in self._months if k < month]
        if not earlier:
            raise TariffNotFound(f"sem bandeira publicada até {month.isoformat()}")
        last = self._months[max(earlier)]
        adder = self.adder_for(last.flag, month)
        value = adder.adder_rs_mwh if adder is not None else last.adder_rs_mwh
        return FlagChoice(month=month, flag=last.flag, adder_rs_mwh=value, source="estimada",
                          resolution=adder.resolution if adder else "")
