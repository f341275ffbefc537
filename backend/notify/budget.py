"""The budget alert: "the projected bill of this billing cycle is above my budget", one per user and site.

Unlike the alerts of backend/analytics/alerts.py it belongs to one user (each sets their own ``orcamento_mensal_rs``
for a site), so the notifier computes it itself: every ``notify_budget_interval_s`` it projects the cycle's bill of
each site someone budgets, once per site, and compares it with each user's budget. The result feeds the same
transition rules as a published list (:func:`backend.notify.transitions.step`, state key ``orcamento/<site>/<user>``,
resolved as soon as one check finds the projection within budget: there is one evaluator, no replica to agree with).

The projection is the dashboard's at-a-glance figure (``/api/v1/painel/resumo``) in its simple form: the energy of
the cycle so far, plus the weekly-profile forecast of the rest of the cycle (today's remainder included), split
between postos like the energy so far, priced by the same :func:`estimate_bill` as ``/custo`` — so the bill with
taxes, bandeiras and, when the consumption is below it, the custo de disponibilidade. Without two weeks of history
or ANEEL's tariffs there is no projection, and the alert is left as it was rather than resolved on no evidence.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final

import msgspec

from backend.analytics.billing import estimate_bill
from backend.analytics.forecast import weekly_profile
from backend.analytics.reports import has_data
from backend.analytics.service import AnalyticsService, local_range
from backend.aneel.postos import split_by_posto
from backend.aneel.sites import SiteConfig
from backend.aneel.tariffs import BandeiraBook, TariffBook, TariffError
from backend.notify.preferences import BUDGET_KIND
from backend.notify.render import brl
from backend.notify.transitions import AlertIn
from protocol.timebase import TZ

HISTORY_DAYS: Final = 56
MIN_HISTORY_DAYS: Final = 14
"""Fewer whole days of history give no projection (the weekly profile needs two of each weekday)."""


class CycleProjection(msgspec.Struct, frozen=True):
    site: str
    cycle_start: dt.date
    cycle_end: dt.date
    projected_rs: Decimal


def state_key(site: str, user: str) -> str:
    return f"{BUDGET_KIND}/{site}/{user}"


def project_bill(cfg: SiteConfig, today: dt.date, cycle_by_posto: dict[str, float], today_kwh: float,
                 history: list[float | None], tariffs: TariffBook, flags: BandeiraBook) -> Decimal:
    """The cycle's bill for the energy so far (by posto) plus the forecast of the rest; TariffError without the
    tariffs of the cycle."""
    c0, c1 = cfg.cycle_for(today)
    values = weekly_profile(history, (c1 - today).days + 1)
    rest = max(values[0] - today_kwh, 0.0) + sum(values[1:])
    so_far = sum(cycle_by_posto.values())
    total = so_far + rest
    kwh = ({p: total * v / so_far for p, v in cycle_by_posto.items()} if so_far > 0 else {"Fora ponta": total})
    return estimate_bill(cfg, c0, c1, kwh, tariffs, flags).total


def budget_alert(site: str, user: str, projection: CycleProjection, budget: Decimal) -> AlertIn | None:
    """The ``orcamento`` alert of ``user`` when the projection exceeds their budget, else None."""
    if projection.projected_rs <= budget:
        return None
    a, b = projection.cycle_start, projection.cycle_end
    return AlertIn(id=f"{site}:{BUDGET_KIND}:{user}", site=site, kind=BUDGET_KIND, severity="aviso",
                   message=f"Conta projetada do ciclo de {a:%d/%m} a {b:%d/%m}: {brl(projection.projected_rs)}, "
                           f"acima do seu orçamento de {brl(budget)}.",
                   value=float(projection.projected_rs), limit=brl(budget))


async def projected_bill(svc: AnalyticsService, site: str, now: dt.datetime) -> CycleProjection | None:
    """The projection of ``site``'s current cycle from InfluxDB and ANEEL's data (None: not enough of either, or
    the site is not in the sites file)."""
    cfg = svc.sites.get(site)
    if cfg is None:
        return None
    today = now.astimezone(TZ).date()
    c0, c1 = cfg.cycle_for(today)
    scope = svc.scope(site, None, None)
    _, _, a, b = local_range((today - dt.timedelta(days=HISTORY_DAYS)).isoformat(), today.isoformat())
    daily = await svc.consumo(scope, a, b, "day", with_peak=False)
    by_day = {dt.datetime.fromtimestamp(x.start_ms / 1000, TZ).date(): x.kwh for x in daily.buckets if has_data([x])}
    history = [by_day.get(today - dt.timedelta(days=i)) for i in range(HISTORY_DAYS, 0, -1)]
    while history and history[0] is None:  # before the meters existed
        history.pop(0)
    if len(history) < MIN_HISTORY_DAYS:
        return None
    _, _, ca, _ = local_range(c0.isoformat(), today.isoformat())
    hourly = await svc.consumo(scope, ca, b, "hour", with_peak=False, raw=False)
    await svc.data.load()
    # The service's posto windows of this site (its overrides included), as /painel/resumo prices them.
    windows = svc.posto_windows(cfg)
    split = split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in hourly.buckets), windows).kwh
    try:
        total = project_bill(cfg, today, dict(split), by_day.get(today, 0.0), history, svc.data.tariffs,
                             svc.data.flags)
    except TariffError:
        return None
    return CycleProjection(site=site, cycle_start=c0, cycle_end=c1, projected_rs=total)
