"""The scheduled ANEEL pull: fetch what the configured sites need, diff it against what is stored, upsert it.

A pull never raises for ANEEL or InfluxDB failures: its :class:`SyncReport` says what went wrong and the stored
data stays as it was. :class:`AneelScheduler` runs it daily inside the backend; several replicas may run it, and
because every write is keyed by the row's natural key, two pulls at once write identical points.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Final

from backend.aneel.client import AneelClient, AneelError
from backend.aneel.records import APPLICATION_BASE, FIO_B, BandeiraAdder, BandeiraMonth, ComponentRecord, TariffRecord
from backend.aneel.sites import SiteConfig
from backend.aneel.store import AneelData, AneelStore, SyncReport, component_line, day_ms, tariff_line
from backend.errors import InfluxError
from backend.metrics import Metrics
from backend.settings import Settings
from backend.store.layout import ANEEL_ADDER, ANEEL_FLAG
from backend.store.lineprotocol import point

log = logging.getLogger(__name__)

SUBGROUPS: Final = ["B1", "B2", "B3"]
"""Low-voltage subgroups (residential, rural, others): the ones CDS bills."""
COMPONENT_YEARS: Final = 2
"""Componentes Tarifárias resources pulled: the newest years published (a cycle may span a readjustment)."""


def _key_text(r: TariffRecord) -> str:
    return (f"{r.distributor} {r.subgroup} {r.modality} {r.subclass} {r.posto} {r.base} "
            f"{r.start.isoformat()}..{r.end.isoformat()}")



async def pull(client: AneelClient, sites: Iterable[SiteConfig]) -> tuple[list[TariffRecord], list[BandeiraMonth],
                                                                         list[BandeiraAdder], list[str]]:
    """Fetch what the configured sites need: B tariffs of their distributors (by CNPJ) and both flag tables."""
    cnpjs: list[str] = []
    for s in sites:
        cnpj = await _cnpj(client, s.distributor)
        if cnpj not in cnpjs:
            cnpjs.append(cnpj)
    tariffs: list[TariffRecord] = []
    for cnpj in cnpjs:
        tariffs += await client.tariffs({"NumCNPJDistribuidora": cnpj, "DscSubGrupo": SUBGROUPS,
                                         "DscBaseTarifaria": "Tarifa de Aplicação"})
    months = await client.bandeira_months()
    adders = await client.bandeira_adders()
    return tariffs, months, adders, cnpjs


async def _cnpj(client: AneelClient, distributor: str) -> str:
    digits = re.sub(r"\D", "", distributor)
    return digits.zfill(14) if len(digits) >= 11 else await client.cnpj_of(distributor)


async def pull_fio_b(client: AneelClient, sites: Iterable[SiteConfig]) -> list[ComponentRecord]:
    """TUSD Fio B rows of the GD sites' distributors from the newest Componentes Tarifárias resources.

    ``NumCPFCNPJ`` is matched with and without its leading zeros (ANEEL's Parquet lost them; which form the
    DataStore holds is not documented)."""
    cnpjs: list[str] = []
    for s in sites:
        if s.gd is not None and (cnpj := await _cnpj(client, s.distributor)) not in cnpjs:
            cnpjs.append(cnpj)
    if not cnpjs:
        return []
    resources = await client.component_resources()
    out: list[ComponentRecord] = []
    for year in sorted(resources)[-COMPONENT_YEARS:]:
        out += await client.components(resources[year], {
            "NumCPFCNPJ": [f for c in cnpjs for f in (c, c.lstrip("0"))], "DscComponenteTarifario": FIO_B,
            "DscBaseTarifaria": APPLICATION_BASE, "DscSubGrupoTarifario": SUBGROUPS})
    return out


async def sync(client: AneelClient, store: AneelStore, sites: Iterable[SiteConfig], *, replica: str = "") -> SyncReport:
    """One pull: fetch, diff against what is stored, upsert everything, record the attempt. Never raises for
    ANEEL or InfluxDB failures: the report says what went wrong and the stored data stays as it was."""
    started = time.time()
    started_at = dt.datetime.fromtimestamp(started, dt.UTC).isoformat()
    replica = replica or socket.gethostname()
    skipped_before = client.skipped_records
    try:
        tariffs, months, adders, cnpjs = await pull(client, sites)
    except AneelError as exc:
        report = SyncReport(ok=False, started_at=started_at, duration_s=round(time.time() - started, 3),
                            error=str(exc))
        try:
            await store.record_sync(report, replica)
        except InfluxError:
            log.warning("could not record failed aneel sync")
        return report
    components: list[ComponentRecord] = []
    components_error = ""
    try:  # a GD II bill can fall back on the stored or configured Fio B: this part failing fails nothing else
        components = await pull_fio_b(client, sites)
    except AneelError as exc:
        components_error = str(exc)
    try:
        old_t = {r.natural_key(): r for r in await store.tariffs()}
        old_m = {m.month: m for m in await store.months()}
        report = SyncReport(ok=True, started_at=started_at, duration_s=0.0, distributors=cnpjs, tariffs=len(tariffs),
                            components=len(components), components_error=components_error,
                            skipped_records=client.skipped_records - skipped_before)
        for r in tariffs:
            prev = old_t.get(r.natural_key())
            if prev is None:
                report.added.append(_key_text(r))
            elif (prev.tusd, prev.te_rs_mwh, prev.reh, prev.distributor) != (r.tusd, r.te_rs_mwh, r.reh,
                                                                              r.distributor):
                report.changed.append(f"{_key_text(r)}: TUSD {prev.tusd}->{r.tusd}, TE {prev.te_rs_mwh}->"
                                      f"{r.te_rs_mwh}")
            else:
                report.unchanged += 1
        for m in months:
            pm = old_m.get(m.month)
            if pm is None:
                report.flags_added.append(f"{m.month:%m/%Y} {m.flag}")
            elif (pm.flag, pm.adder_rs_mwh) != (m.flag, m.adder_rs_mwh):
                report.flags_changed.append(f"{m.month:%m/%Y} {pm.flag}->{m.flag}")
        lines = [tariff_line(r) for r in tariffs] + [component_line(c) for c in components]
        lines += [point(ANEEL_FLAG, {}, {"flag": m.flag, "adder": str(m.adder_rs_mwh),
                                   "gerado": m.generated.isoformat() if m.generated else ""}, day_ms(m.month))
                  for m in months]
        lines += [point(ANEEL_ADDER, {"flag": a.flag}, {"resolution": a.resolution, "adder": str(a.adder_rs_mwh)},
                        day_ms(a.start)) for a in adders]
        await store.write(lines)
        report.duration_s = round(time.time() - started, 3)
        await store.record_sync(report, replica)
        return report
    except InfluxError as exc:
        return SyncReport(ok=False, started_at=started_at, duration_s=round(time.time() - started, 3),
                          error=f"InfluxDB: {exc}")


class AneelScheduler:
    """Daily pull inside the backend. Several replicas may run it: before pulling, each checks whether another
    one already pulled within the interval; if two pull at once they write identical points (idempotent)."""

    def __init__(self, settings: Settings, store: AneelStore, data: AneelData, sites: list[SiteConfig],
                 client: AneelClient, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.data = data
        self.sites = sites
        self.client = client
        self.last_report: SyncReport | None = None
        self._task: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()

    async def run_once(self) -> SyncReport:
        async with self._sync_lock:
            if self.settings.influx_manage_schema:  # InfluxDB may have been down when the app started
                with contextlib.suppress(InfluxError):
                    await self.store.ensure_schema()
            report = await sync(self.client, self.store, self.sites, replica=self.settings.resolved_client_id())
            self.last_report = report
            if report.ok:
                self._note_last_sync(0.0)
                await self.data.load(force=True)
            return report

    def _note_last_sync(self, age_s: float | None) -> None:
        # From the sync log, so it covers pulls by other replicas too; Prometheus alerts on its age
        # (deploy/prometheus/alerts.yml, CDSAneelDataStale).
        if self.metrics is not None and age_s is not None:
            self.metrics.aneel_last_sync.set(time.time() - age_s)

    async def _due_in(self) -> float:
        try:
            st = await self.store.status()
        except InfluxError:
            return self.settings.aneel_retry_s
        self._note_last_sync(st.age_s)
        due = 0.0 if st.age_s is None else self.settings.aneel_sync_interval_s - st.age_s
        if st.last_error and st.attempt_age_s is not None:  # the last attempt failed: back off from it
            due = max(due if st.age_s is not None else 0.0, self.settings.aneel_retry_s - st.attempt_age_s)
        return max(0.0, due)

    async def _loop(self) -> None:
        while True:
            wait = await self._due_in()
            if wait > 0:
                await asyncio.sleep(min(wait, 3600.0))
                continue
            report = await self.run_once()
            log.info("aneel sync", extra={"ok": report.ok, "added": len(report.added),
                                          "changed": len(report.changed), "error": report.error})
            if not report.ok:
                await asyncio.sleep(self.settings.aneel_retry_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="aneel-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def aneel_client(settings: Settings) -> AsyncIterator[AneelClient]:
    async with AneelClient(settings.aneel_base_url, timeout_s=settings.aneel_timeout_s,
                           attempts=settings.aneel_attempts, backoff_max_s=settings.aneel_backoff_max_s) as c:
        yield c
