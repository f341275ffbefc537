"""Alerts: meter offline, consumption far above its usual profile, voltage outside PRODIST Módulo 8, low power
factor. Rules are pure functions; :class:`AlertEngine` feeds them from InfluxDB, keeps the current list for the
API and publishes it, retained, on ``cds/v1/{site}/alerts``.

Voltage classes (PRODIST Módulo 8, tensão nominal ≤ 1 kV, sistemas 220/127 V), on the mean of the last 10 min
(the module's 10-minute integration):

=========  =====================  ====================================  ======================
Nominal    Adequada               Precária                              Crítica
=========  =====================  ====================================  ======================
220 V      202 ≤ V ≤ 231          191 ≤ V < 202 ou 231 < V ≤ 233        V < 191 ou V > 233
127 V      117 ≤ V ≤ 133          110 ≤ V < 117 ou 133 < V ≤ 135        V < 110 ou V > 135
=========  =====================  ====================================  ======================

Every evaluation is a pure function of InfluxDB's content and the clock, so replicas publishing the same
retained state never disagree for long; the payload carries ``evaluated_at``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal

import msgspec

from backend.analytics.queries import fetch_samples
from backend.aneel.sites import SiteConfig
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import READINGS, RP_RAW, table
from backend.store.registers import consumption
from protocol.timebase import HOUR_MS, TZ

log = logging.getLogger(__name__)
Kind = Literal["offline", "consumo_anormal", "tensao", "fator_potencia"]
Severity = Literal["aviso", "critico"]
LIMITS: Final = {220: ((202.0, 231.0), (191.0, 233.0)), 127: ((117.0, 133.0), (110.0, 135.0))}
MIN_LOAD_W: Final = 100.0
"""Power factor is only meaningful with a real load: below this mean power it is not judged."""


class Alert(msgspec.Struct, frozen=True):
    id: str
    site: str
    device: str
    kind: Kind
    severity: Severity
    message: str
    value: float | None = None
    limit: str = ""
    since: str | None = None


class AlertList(msgspec.Struct):
    site: str
    evaluated_at: str
    alerts: list[Alert]
    v: int = 1


def nominal_voltage(v: float) -> int:
    """127 or 220 V: whichever nominal the measured voltage is closer to."""
    return 220 if abs(v - 220) < abs(v - 127) else 127


def voltage_class(v: float, nominal: int) -> Literal["adequada", "precaria", "critica"]:
    (a_lo, a_hi), (p_lo, p_hi) = LIMITS[nominal]
    if a_lo <= v <= a_hi:
        return "adequada"
    if p_lo <= v <= p_hi:
        return "precaria"
    return "critica"


def check_voltage(site: str, device: str, v: float, nominal: int = 0) -> Alert | None:
    nom = nominal or nominal_voltage(v)
    cls = voltage_class(v, nom)
    if cls == "adequada":
        return None
    (a_lo, a_hi), _ = LIMITS[nom]
    label = "precária" if cls == "precaria" else "crítica"
    return Alert(id=f"{site}:{device}:tensao", site=site, device=device, kind="tensao",
                 severity="aviso" if cls == "precaria" else "critico",
                 message=f"Tensão {label}: {v:.1f} V (nominal {nom} V; adequada {a_lo:.0f}–{a_hi:.0f} V, "
                         "PRODIST Módulo 8)".replace(".", ","),
                 value=round(v, 1), limit=f"{a_lo:.0f}-{a_hi:.0f} V")


def check_power_factor(site: str, device: str, pf: float, p_w: float, pf_min: float = 0.92) -> Alert | None:
    if p_w < MIN_LOAD_W or abs(pf) >= pf_min:
        return None
    return Alert(id=f"{site}:{device}:fator_potencia", site=site, device=device, kind="fator_potencia",
                 severity="aviso", message=f"Fator de potência {abs(pf):.2f} abaixo de {pf_min:.2f} "
                 "(referência ANEEL)".replace(".", ","), value=round(abs(pf), 3), limit=f">= {pf_min}")


def check_offline(site: str, device: str, last_seen_ms: int | None, now_ms: int, offline_s: int) -> Alert | None:
    if last_seen_ms is not None and now_ms - last_seen_ms <= offline_s * 1000:
        return None
    since = dt.datetime.fromtimestamp(last_seen_ms / 1000, TZ).isoformat() if last_seen_ms else None
    minutes = (now_ms - last_seen_ms) // 60_000 if last_seen_ms else None
    msg = (f"Medidor sem comunicação há {minutes} min" if minutes is not None
           else "Medidor sem nenhuma medição registrada")
    return Alert(id=f"{site}:{device}:offline", site=site, device=device, kind="offline", severity="critico",
                 message=msg, value=float(minutes) if minutes is not None else None, limit=f"{offline_s} s",
                 since=since)


def check_profile(site: str, device: str, kwh: float, usual: Sequence[float], hour_label: str) -> Alert | None:
    """Far above the usual profile: above max(2 × median, median + 4 × robust σ) and at least 0,2 kWh more,
    judged against at least 7 earlier values of the same hour and day type."""
    if len(usual) < 7:
        return None
    med = statistics.median(usual)
    mad = statistics.median(abs(x - med) for x in usual) * 1.4826
    threshold = max(2 * med, med + 4 * mad, med + 0.2)
    if kwh <= threshold:
        return None
    return Alert(id=f"{site}:{device}:consumo_anormal", site=site, device=device, kind="consumo_anormal",
                 severity="aviso", message=f"Consumo de {kwh:.2f} kWh às {hour_label}, acima do habitual "
                 f"({med:.2f} kWh; limite {threshold:.2f} kWh)".replace(".", ","),
                 value=round(kwh, 3), limit=f"{threshold:.3f} kWh")


def _day_type(ms: int) -> bool:
    return dt.datetime.fromtimestamp(ms / 1000, TZ).weekday() < 5


class AlertEngine:
    """Evaluates every configured site periodically; ``current`` holds the last lists for the API."""

    def __init__(self, settings: Settings, influx: InfluxClient, sites: dict[str, SiteConfig],
                 publish: Callable[[str, bytes], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.influx = influx
        self.sites = sites
        self.publish = publish
        self.current: dict[str, AlertList] = {}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()

    async def evaluate_site(self, site: SiteConfig, now_ms: int | None = None) -> AlertList:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        s = self.settings
        raw = table(s.influx_db, RP_RAW, READINGS)
        last = await self.influx.query(
            f"SELECT last(p) FROM {raw} WHERE site = $site AND time > {now - 30 * 86_400_000}ms "
            f"AND time <= {now}ms GROUP BY device", db=s.influx_db, params={"site": site.id})
        seen = {x.tags.get("device", ""): int(x.values[0][0]) for x in last if x.values}
        recent = await self.influx.query(
            f"SELECT mean(vrms), mean(pf), mean(p) FROM {raw} WHERE site = $site AND time > {now - 600_000}ms "
            f"AND time <= {now}ms GROUP BY device", db=s.influx_db, params={"site": site.id})
        alerts: list[Alert] = []
        for dev in sorted(set(site.devices) | set(seen)):
            a = check_offline(site.id, dev, seen.get(dev), now, s.alerts_offline_s)
            if a:
                alerts.append(a)
        for x in recent:
            if not x.values:
                continue
            _, v, pf, p = x.values[0]
            dev = x.tags.get("device", "")
            for a in (check_voltage(site.id, dev, float(v), site.nominal_voltage) if v is not None else None,
                      check_power_factor(site.id, dev, float(pf), float(p), s.alerts_pf_min)
                      if pf is not None and p is not None else None):
                if a:
                    alerts.append(a)
        alerts += await self._profile_alerts(site, now)
        result = AlertList(site=site.id, evaluated_at=dt.datetime.fromtimestamp(now / 1000, TZ).isoformat(),
                           alerts=alerts)
        self.current[site.id] = result
        return result

    async def _profile_alerts(self, site: SiteConfig, now: int) -> list[Alert]:
        """The last complete hour of each device against the same hour on the previous 28 days (same day type)."""
        hour_end = now - now % HOUR_MS
        start = hour_end - 29 * 86_400_000
        samples = await fetch_samples(self.influx, self.settings.influx_db, start, hour_end, "r1h", site=site.id)
        out: list[Alert] = []
        for dev, ss in samples.items():
            c = consumption([ss], start, hour_end, "hour", gap_ms=2 * HOUR_MS, min_dt_ms=HOUR_MS, with_peak=False,
                            max_power_w=self.settings.analytics_max_power_w)
            if not c.buckets:
                continue
            last = c.buckets[-1]
            usual = [b.kwh for b in c.buckets[:-1]
                     if (last.start_ms - b.start_ms) % 86_400_000 == 0 and _day_type(b.start_ms) == _day_type(
                         last.start_ms) and not b.estimated]
            label = dt.datetime.fromtimestamp(last.start_ms / 1000, TZ).strftime("%Hh de %d/%m")
            a = check_profile(site.id, dev, last.kwh, usual, label)
            if a:
                out.append(a)
        return out

    async def run_once(self, now_ms: int | None = None) -> None:
        for site in self.sites.values():
            try:
                result = await self.evaluate_site(site, now_ms)
            except Exception:  # one bad site or an InfluxDB outage must not stop the loop
                self.errors += 1
                log.exception("alert evaluation failed", extra={"site": site.id})
                continue
            if self.publish is not None:
                try:
                    await self.publish(f"cds/v1/{site.id}/alerts", self._encoder.encode(result))
                except Exception:
                    self.errors += 1
                    log.warning("alert publish failed", extra={"site": site.id})

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.settings.alerts_interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
