"""Site configuration for pricing: distributor, subgroup, modality, taxes, billing cycle, devices and groups.

Read from a TOML file whose path is in the backend settings (``BACKEND_SITES_FILE``); see docs/analytics.md for
an annotated example. Rates are fractions written as strings or numbers (``icms = "0.18"``) and kept as
:class:`~decimal.Decimal` so a bill can be reproduced to the cent.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal

import msgspec

from backend.aneel.postos import PostoWindows, windows_for
from backend.aneel.records import NOT_APPLICABLE
from protocol.ids import is_device_id

Subgroup = Literal["B1", "B2", "B3"]
Modality = Literal["Convencional", "Branca"]
Regime = Literal["GD I", "GD II"]
GD_I_DEADLINE: Final = dt.date(2023, 1, 7)
"""Lei 14.300 art. 26: access requested up to 12 months after publication (2022-01-07) keeps the GD I rules."""
AVAILABILITY_KWH: Final = {1: 30, 2: 50, 3: 100}
"""Custo de disponibilidade: minimum billed kWh for mono/bi/three-phase connections."""


class SiteConfigError(ValueError):
    """The sites file is missing, unreadable or inconsistent."""


class GdConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Micro/minigeração distribuída under the SCEE (Lei 14.300/2022): the ``[site.gd]`` table.

    The regime decides what compensated energy pays (GD I: nothing until 2045; GD II: the calendar year's share
    of TUSD Fio B); ICMS on compensated energy depends on the state's adhesion to Convênio ICMS 16/2015 and its
    own limits (MT taxes the TUSD, PR limits the exemption in time), so it is configured, not guessed.
    """

    regime: Regime
    access_date: dt.date | None = None
    """Date the access (connection) was requested; when given it must agree with the regime (GD I up to
    2023-01-07)."""
    state: str = ""
    """UF of the installation (``"MG"``): documents which state's ICMS rule ``icms_exempt_compensated`` follows."""
    icms_exempt_compensated: bool = True
    """Convênio ICMS 16/2015: ICMS exempt on compensated energy (never on the custo de disponibilidade)."""
    fio_b_rs_mwh: Decimal | None = None
    """TUSD Fio B (R$/MWh) used when ANEEL's Componentes Tarifárias have no row for the distributor."""


class SiteConfig(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    distributor: str
    """Sigla (``"CEMIG-D"``) or CNPJ; resolved to the CNPJ so a renamed distributor keeps working."""
    name: str = ""
    subgroup: Subgroup = "B1"
    modality: Modality = "Convencional"
    klass: str = "Residencial"
    subclass: str = "Residencial"
    detail: str = NOT_APPLICABLE
    icms: Decimal = Decimal("0")
    pis: Decimal = Decimal("0")
    cofins: Decimal = Decimal("0")
    billing_day: int = 0
    """Reading day of the month (1-28); 0 = calendar month."""
    phases: int = 0
    """1/2/3 applies the custo de disponibilidade (30/50/100 kWh minimum); 0 = do not apply."""
    ponta: tuple[str, str] | None = None
    intermediario: list[tuple[str, str]] | None = None
    devices: list[str] = msgspec.field(default_factory=list)
    groups: dict[str, list[str]] = msgspec.field(default_factory=dict)
    nominal_voltage: int = 0
    """127 or 220 V for the PRODIST voltage alert; 0 = inferred per device from its readings."""
    subsystem: Literal["", "SE", "S", "NE", "N"] = ""
    """The SIN subsystem the site draws from (``/analytics/renovavel``); empty = derived from the distributor."""
    gd: GdConfig | None = None
    """Set for a site with distributed generation billed under the SCEE (``custo`` then prints the SCEE bill)."""
    generation: list[str] = msgspec.field(default_factory=list)
    """Generation meters (a PV inverter's meter, its import register counting what the panels produced): their
    energy is the site's generation, not its consumption, and gives the self-consumption share in ``consumo``."""

    def windows(self, cnpj: str = "") -> PostoWindows:
        if self.ponta is not None:
            return PostoWindows(ponta=self.ponta, intermediario=list(self.intermediario or []), source="site")
        return windows_for(self.distributor, cnpj)

    def cycle_for(self, day: dt.date) -> tuple[dt.date, dt.date]:
        """The billing cycle (first and last day, inclusive) that contains ``day``.

        With a reading day R the cycle runs from R+1 of one month to R of the next, which is how days are
        counted for pro-rating the bandeira (REN 1.000/2021 art. 307, as read from real bills).
        """
        if self.billing_day <= 0:
            first = day.replace(day=1)
            nxt = (first + dt.timedelta(days=32)).replace(day=1)
            return first, nxt - dt.timedelta(days=1)
        r = self.billing_day
        if day.day <= r:
            end = day.replace(day=r)
            prev_end = (day.replace(day=1) - dt.timedelta(days=1)).replace(day=r)
        else:
            prev_end = day.replace(day=r)
            end = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=r)
        return prev_end + dt.timedelta(days=1), end


class SitesFile(msgspec.Struct, frozen=True):
    site: list[SiteConfig] = msgspec.field(default_factory=list)


def _dec_hook(tp: type, obj: object) -> object:
    if tp is Decimal and isinstance(obj, int | float | str):
        return Decimal(str(obj))
    # msgspec's convention for "this hook does not convert to that type": it then reports a validation error
    raise NotImplementedError(f"no conversion to {tp}")


def parse_sites(text: str) -> dict[str, SiteConfig]:
    """TOML text -> sites by id, validated (rates in [0, 1), billing day 0-28, phases 0-3, unique ids)."""
    try:
        raw = tomllib.loads(text)
        parsed = msgspec.convert(raw, SitesFile, dec_hook=_dec_hook, strict=False)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise SiteConfigError(f"configuração de sites inválida: {exc}") from exc
    out: dict[str, SiteConfig] = {}
    for s in parsed.site:
        if s.id in out:
            raise SiteConfigError(f"site repetido: {s.id}")
        for name, rate in (("icms", s.icms), ("pis", s.pis), ("cofins", s.cofins)):
            if not Decimal(0) <= rate < 1:
                raise SiteConfigError(f"{s.id}: {name} deve ser uma fração entre 0 e 1, não {rate}")
        if s.pis + s.cofins >= 1:
            raise SiteConfigError(f"{s.id}: pis + cofins >= 1")
        if not 0 <= s.billing_day <= 28:
            raise SiteConfigError(f"{s.id}: billing_day deve estar entre 0 e 28")
        if s.phases not in (0, 1, 2, 3):
            raise SiteConfigError(f"{s.id}: phases deve ser 0, 1, 2 ou 3")
        if s.gd is not None:
            _check_gd(s.id, s.gd)
        if bad := [d for d in s.generation if not is_device_id(d)]:
            raise SiteConfigError(f"{s.id}: generation deve listar medidores de 16 dígitos hexadecimais: {bad[0]!r}")
        out[s.id] = s
    return out


def _check_gd(site: str, gd: GdConfig) -> None:
    if gd.access_date is not None and gd.regime == "GD I" and gd.access_date > GD_I_DEADLINE:
        raise SiteConfigError(f"{site}: acesso solicitado em {gd.access_date.isoformat()} é GD II (GD I só até "
                              f"{GD_I_DEADLINE.isoformat()}, Lei 14.300 art. 26)")
    if gd.fio_b_rs_mwh is not None and gd.fio_b_rs_mwh < 0:
        raise SiteConfigError(f"{site}: gd.fio_b_rs_mwh negativo")
    if gd.state and (len(gd.state) != 2 or not gd.state.isalpha() or not gd.state.isupper()):
        raise SiteConfigError(f"{site}: gd.state deve ser a sigla da UF, como \"MG\"")


def load_sites(path: Path | None) -> dict[str, SiteConfig]:
    if path is None:
        return {}
    try:
        return parse_sites(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"não foi possível ler {path}: {exc}") from exc
