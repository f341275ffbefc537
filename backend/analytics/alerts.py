"""The alert engine: evaluates every configured site periodically, keeps the current lists for the API and
publishes each, retained, on ``cds/v1/{site}/alerts``. The rules themselves are pure functions in
:mod:`backend.analytics.alert_rules` (``Alert``, ``AlertList`` and the rules stay importable from here).

What the rules are fed, and from where:

* meters (``offline``, ``tensao``, ``fator_potencia``, ``consumo_anormal``): the readings in InfluxDB;
* gateways (``fila_gateway``): their retained statuses, which the ingest's registry holds. Analytics and ingest are
  sibling layers that must not import each other, so the app passes a :data:`GatewayStatuses` provider in; with
  ingest off on a replica the registry is empty and no gateway is judged there;
* the site's data (``dados_desatualizados``, ``bandeira``): the ANEEL and ONS sync logs and ANEEL's monthly
  bandeiras in InfluxDB, read once per evaluation round whatever the number of sites. A replica that does not
  pull ANEEL (or ONS) itself does not judge its freshness, as the health check does.

Every evaluation is a function of those inputs and the clock, so replicas publishing the same retained state never
disagree for long; the payload carries ``evaluated_at``. The one memory is each gateway's recent queue sizes
(growth needs more than the latest status); every replica receives the same statuses from the broker, so they
agree once each has watched for the growth window.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

import msgspec

from backend.analytics.alert_rules import (
    Alert,
    AlertList,
    Kind,
    QueueHistory,
    Severity,
    check_bandeira,
    check_gateway_queue,
    check_offline,
    check_power_factor,
    check_profile,
    check_stale,
    check_voltage,
)
from backend.analytics.queries import fetch_samples
from backend.aneel.sites import SiteConfig
from backend.aneel.store import AneelStore
from backend.aneel.store import SyncStatus as AneelSyncStatus
from backend.aneel.tariffs import BandeiraBook
from backend.errors import InfluxError
from backend.ons.store import OnsStore
from backend.ons.store import SyncStatus as OnsSyncStatus
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import READINGS, RP_RAW, table
from backend.store.registers import consumption
from protocol.mqtt import GatewayStatus
from protocol.timebase import HOUR_MS, TZ

__all__ = ["Alert", "AlertEngine", "AlertList", "GatewayStatuses", "Kind", "Severity"]
"""The payload's types stay importable from here, where the API and the notifier have always found them."""

log = logging.getLogger(__name__)

GatewayStatuses = Callable[[], Mapping[tuple[str, str], GatewayStatus]]
"""(site, gateway) → that gateway's latest retained status, as the ingest's registry holds it right now."""


class SyncPoint(NamedTuple):
    last_ok_ms: int | None
    """The last successful pull by any replica (None = never)."""
    attempted: bool
    """Whether any pull was attempted at all."""


class DataState(NamedTuple):
    """The site-independent inputs of one evaluation round."""

    aneel: SyncPoint | None
    """None: this replica does not pull ANEEL, so it does not judge its freshness."""
    ons: SyncPoint | None
    flags: BandeiraBook


def _sync_point(st: AneelSyncStatus | OnsSyncStatus) -> SyncPoint:
    last_ok = round(dt.datetime.fromisoformat(st.last_ok_at).timestamp() * 1000) if st.last_ok_at else None
    return SyncPoint(last_ok, st.last_attempt_at is not None)


def _day_type(ms: int) -> bool:
    return dt.datetime.fromtimestamp(ms / 1000, TZ).weekday() < 5


class AlertEngine:
    """Evaluates every configured site periodically; ``current`` holds the last lists for the API."""

    def __init__(self, settings: Settings, influx: InfluxClient, sites: dict[str, SiteConfig],
                 publish: Callable[[str, bytes], Awaitable[None]] | None = None, *,
                 gateways: GatewayStatuses | None = None) -> None:
        self.settings = settings
        self.influx = influx
        self.sites = sites
        self.publish = publish
        self.gateways = gateways
        self.current: dict[str, AlertList] = {}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()
        self._aneel = AneelStore(influx, settings.influx_db)
        self._ons = OnsStore(influx, settings.influx_db)
        self._queues = QueueHistory(settings.alerts_gateway_queue_window_s)
        self._data: tuple[int, DataState] | None = None

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
        alerts += self._gateway_alerts(site.id)
        try:
            alerts += await self._data_alerts(site.id, now)
        except InfluxError:  # e.g. ONS's retention policy not made yet: the meters' alerts must still go out
            self.errors += 1
            log.warning("alert data checks failed", extra={"site": site.id})
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

    def _gateway_alerts(self, site: str) -> list[Alert]:
        if self.gateways is None:
            return []
        s = self.settings
        statuses = self.gateways()
        self._queues.keep_only(set(statuses))
        out: list[Alert] = []
        for (gw_site, gateway), status in sorted(statuses.items()):
            if gw_site != site:
                continue
            history = self._queues.observe(site, gateway, status)
            a = check_gateway_queue(site, gateway, status, history, age_s=s.alerts_gateway_queue_age_s,
                                    critical_s=s.alerts_gateway_queue_critical_s, rows=s.alerts_gateway_queue_rows,
                                    window_s=s.alerts_gateway_queue_window_s)
            if a:
                out.append(a)
        return out

    async def _data_state(self, now: int) -> DataState:
        """Read once per round: every site of a :meth:`run_once` is evaluated at the same ``now``."""
        if self._data is not None and self._data[0] == now:
            return self._data[1]
        s = self.settings
        state = DataState(aneel=_sync_point(await self._aneel.status()) if s.aneel_sync_enabled else None,
                          ons=_sync_point(await self._ons.status()) if s.ons_sync_enabled else None,
                          flags=BandeiraBook(await self._aneel.months()))
        self._data = (now, state)
        return state

    async def _data_alerts(self, site: str, now: int) -> list[Alert]:
        s = self.settings
        state = await self._data_state(now)
        found = [check_stale(site, "aneel", *state.aneel, now, s.alerts_aneel_stale_s) if state.aneel else None,
                 check_stale(site, "ons", *state.ons, now, s.alerts_ons_stale_s) if state.ons else None,
                 check_bandeira(site, state.flags, dt.datetime.fromtimestamp(now / 1000, TZ).date())]
        return [a for a in found if a is not None]

    async def run_once(self, now_ms: int | None = None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        for site in self.sites.values():
            try:
                result = await self.evaluate_site(site, now)
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
