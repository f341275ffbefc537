"""How much of a site's energy coincided with renewable generation in its SIN subsystem, hour by hour.

Method (docs/ons.md): for every hour of the period, the site's kWh (from its energy registers) times that hour's
renewable share of its subsystem's generation — (hydro + wind + solar) / (hydro + thermal + wind + solar), from
ONS's hourly energy balance — summed over the period. The answer is the kWh-weighted share: hours when the site
consumed more weigh more, so a household that shifts load to the windy nights of the Nordeste or to the sunny
middle of the day sees it.

Limits, said plainly in the answer too: this is coincidence, not attribution. Electricity is not traceable to a
plant; a subsystem importing from its neighbours (interchange) is credited only with its own generation; thermal
includes biomass; the site's own solar and the distributed generation not seen by ONS are outside the balance;
hours without grid data (ONS publishes one or two days late) are left out of the share and reported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Final

import msgspec

from backend.analytics.service import AnalyticsService, Scope
from backend.aneel.sites import SiteConfig
from backend.aneel.tariffs import TariffError
from backend.errors import ApiError, NotFoundError
from backend.ons.datasets import SUBSYSTEM_NAMES
from backend.ons.grid import DataAge, GridData
from backend.ons.subsystems import site_subsystem
from protocol.timebase import TZ

METHOD: Final = ("Para cada hora do período, o consumo do site (kWh) é multiplicado pela participação renovável "
                 "(hidráulica + eólica + solar) na geração do seu subsistema naquela hora, segundo o balanço "
                 "horário do ONS; a soma dividida pelo consumo total dá a parcela renovável.")
LIMITS: Final = (
    "Coincidência no tempo, não atribuição: a energia elétrica não é rastreável até uma usina.",
    "O intercâmbio entre subsistemas não é atribuído a fontes: conta só a geração do próprio subsistema.",
    "A geração térmica inclui biomassa e nuclear (o ONS não as separa neste conjunto).",
    "Geração distribuída não vista pelo ONS e a geração própria do site ficam fora do balanço.",
    "Horas sem dados do ONS (publicados com um ou dois dias de atraso) ficam fora da parcela e são informadas.",
)


class RenewableDay(msgspec.Struct, frozen=True):
    dia: dt.date
    kwh: float
    kwh_renovavel: float
    participacao_pct: float | None
    """kWh-weighted renewable share of the day's hours with grid data."""


class RenewableOut(msgspec.Struct):
    site: str
    subsistema: str
    nome_subsistema: str
    origem_subsistema: str
    """``site`` (the sites file says so) or ``distribuidora`` (derived from the distributor)."""
    inicio: dt.date
    fim: dt.date
    kwh_total: float
    kwh_com_dados_da_rede: float
    kwh_renovavel: float
    participacao_renovavel_pct: float | None
    """Share of the kWh with grid data that coincided with renewable generation."""
    participacao_media_da_rede_pct: float | None
    """The subsystem's own renewable share averaged over the same hours, unweighted (for comparison)."""
    horas_sem_dados_da_rede: int
    kwh_sem_dados_da_rede: float
    dias: list[RenewableDay]
    metodo: str
    limites: list[str]
    idade_dos_dados_da_rede: DataAge


class Coincidence(msgspec.Struct):
    kwh: float = 0.0
    kwh_covered: float = 0.0
    kwh_renewable: float = 0.0
    share_sum: float = 0.0
    hours_covered: int = 0
    hours_missing: int = 0
    days: dict[dt.date, list[float]] = msgspec.field(default_factory=dict)
    """Local day -> [kWh, kWh with grid data, renewable kWh]."""


def coincide(hours: Iterable[tuple[int, float]], shares: Mapping[int, float]) -> Coincidence:
    """``(hour start ms, site kWh)`` against ``hour start ms -> renewable fraction``: the sums of the method."""
    out = Coincidence()
    for start, kwh in hours:
        day = out.days.setdefault(dt.datetime.fromtimestamp(start / 1000, TZ).date(), [0.0, 0.0, 0.0])
        out.kwh += kwh
        day[0] += kwh
        share = shares.get(start)
        if share is None:
            out.hours_missing += 1
            continue
        out.hours_covered += 1
        out.share_sum += share
        out.kwh_covered += kwh
        out.kwh_renewable += kwh * share
        day[1] += kwh
        day[2] += kwh * share
    return out


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 2) if whole > 0 else None


def site_subsystem_of(svc: AnalyticsService, site: SiteConfig) -> tuple[str | None, str]:
    """The site's subsystem (None when neither the sites file nor the distributor tells) and where it came from:
    ``site`` (the sites file) or ``distribuidora``. Uses the ANEEL data already loaded, for a CNPJ's sigla."""
    sigla = ""
    with contextlib.suppress(TariffError):  # a CNPJ ANEEL knows: its sigla may be in the table
        sigla = svc.data.tariffs.current_name(svc.data.tariffs.resolve_cnpj(site.distributor))
    return site_subsystem(site.subsystem, site.distributor, sigla)


def subsystem_of(svc: AnalyticsService, scope: Scope) -> tuple[str, str]:
    """The site's subsystem and where it came from; an ApiError (409) when neither the sites file nor the
    distributor tells."""
    site = svc.site_of(scope)
    code, origin = site_subsystem_of(svc, site)
    if code is None:
        raise ApiError(f"Subsistema do site '{site.id}' desconhecido para a distribuidora '{site.distributor}': "
                       "defina 'subsystem' (SE, S, NE ou N) no arquivo de sites.", status_code=409)
    return code, origin


async def site_renewable(svc: AnalyticsService, grid: GridData, scope: Scope, start: dt.date, end: dt.date,
                         start_ms: int, end_ms: int) -> RenewableOut:
    """The renewable coincidence of a site's consumption in ``[start_ms, end_ms)`` (see the module docstring)."""
    if scope.site is None:
        raise NotFoundError(f"Site '{scope.label}' não configurado (BACKEND_SITES_FILE).")
    await svc.data.load()
    code, origin = subsystem_of(svc, scope)
    # The site's hourly series, never the raw readings: ONS's balance is hourly anyway, and the month's first
    # days would otherwise read every one-second reading of every meter.
    hourly = await svc.consumo(scope, start_ms, end_ms, "hour", with_peak=False, raw=False)
    shares = await grid.renewable_shares(code, start_ms, end_ms)
    c = coincide(((b.start_ms, b.kwh) for b in hourly.buckets), shares)
    days = [RenewableDay(dia=d, kwh=round(v[0], 3), kwh_renovavel=round(v[2], 3), participacao_pct=_pct(v[2], v[1]))
            for d, v in sorted(c.days.items())]
    return RenewableOut(
        site=scope.site.id, subsistema=code, nome_subsistema=SUBSYSTEM_NAMES[code], origem_subsistema=origin,
        inicio=start, fim=end, kwh_total=round(c.kwh, 3), kwh_com_dados_da_rede=round(c.kwh_covered, 3),
        kwh_renovavel=round(c.kwh_renewable, 3), participacao_renovavel_pct=_pct(c.kwh_renewable, c.kwh_covered),
        participacao_media_da_rede_pct=round(100.0 * c.share_sum / c.hours_covered, 2) if c.hours_covered else None,
        horas_sem_dados_da_rede=c.hours_missing, kwh_sem_dados_da_rede=round(c.kwh - c.kwh_covered, 3), dias=days,
        metodo=METHOD, limites=list(LIMITS), idade_dos_dados_da_rede=await grid.age())
