"""Which TUSD Fio B applies to a site on a day, from ANEEL's Componentes Tarifárias (or the site's configured value).

A GD II unit pays the calendar year's share of the Fio B on the energy it compensates (Lei 14.300 art. 27). The
Componentes Tarifárias dataset breaks each tariff into components; ``TUSD_FioB`` rows exist per subgrupo,
modalidade, classe, detalhe (``SCEE`` or ``Não se aplica``) and posto. Not every key is published for every
distributor, and some distributors have no rows at all, so the lookup prefers the closest row and falls back:

1. same CNPJ, ``Tarifa de Aplicação``, subgrupo, modalidade, unit R$/MWh (required);
2. best first: the posto asked for over ``Não se aplica``; detalhe ``SCEE`` over ``Não se aplica``; the site's
   classe and subclasse over others (a social-tariff subclass falls back to the plain residential one);
3. vigência as for tariffs: the latest start covering the day, else the newest already started (provisional);
4. none: the site's ``gd.fio_b_rs_mwh``, reported as ``configurado``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import msgspec

from backend.aneel.records import APPLICATION_BASE, FIO_B, NOT_APPLICABLE, ComponentRecord
from backend.aneel.tariffs import TariffNotFound


class FioB(msgspec.Struct, frozen=True):
    """The Fio B used for one posto and run of days, and where it came from."""

    rs_mwh: Decimal
    source: str
    """``"ANEEL"`` (Componentes Tarifárias) or ``"configurado"`` (the site's ``gd.fio_b_rs_mwh``)."""
    reh: str = ""
    expired: bool = False


class FioBBook:
    """The ``TUSD_FioB`` rows of the configured distributors."""

    def __init__(self, records: Iterable[ComponentRecord]) -> None:
        self._records = [r for r in records if r.component == FIO_B and r.unit == "R$/MWh"
                         and r.base == APPLICATION_BASE]

    def fio_b(
        self,
        cnpj: str,
        day: dt.date,
        *,
        subgroup: str,
        modality: str,
        posto: str,
        klass: str = "Residencial",
        subclass: str = "Residencial",
        configured: Decimal | None = None,
    ) -> FioB:
        """The Fio B (R$/MWh) for one posto on ``day`` (see the module doc for the preference order)."""
        rows = [r for r in self._records if r.cnpj == cnpj and r.subgroup == subgroup and r.modality == modality
                and r.posto in (posto, NOT_APPLICABLE)]

        def rank(r: ComponentRecord) -> tuple[bool, bool, bool, bool]:
            return (r.posto == posto, r.detail == "SCEE", r.klass == klass,
                    r.subclass in (subclass, "Residencial"))

        if rows:
            best = max(rank(r) for r in rows)
            rows = [r for r in rows if rank(r) == best]
            covering = [r for r in rows if r.covers(day)]
            if covering:
                r = max(covering, key=lambda x: (x.start, x.end))
                return FioB(rs_mwh=r.value, source="ANEEL", reh=r.reh)
            started = [r for r in rows if r.start <= day]
            if started:
                r = max(started, key=lambda x: (x.start, x.end))
                return FioB(rs_mwh=r.value, source="ANEEL", reh=r.reh, expired=True)
        if configured is not None:
            return FioB(rs_mwh=configured, source="configurado")
        raise TariffNotFound(f"sem TUSD Fio B da ANEEL para o CNPJ {cnpj} ({subgroup}/{modality}/{posto}) em "
                             f"{day.isoformat()}; configure gd.fio_b_rs_mwh no site")
