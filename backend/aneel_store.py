"""ANEEL data in InfluxDB: idempotent upserts, last good data, the scheduled pull and what a pull changed.

Layout (retention policy ``aneel``, kept forever):

* ``aneel_tarifa`` — one point per tariff row. Tags = the row's natural key (CNPJ, base, subgrupo, modalidade,
  classe, subclasse, detalhe, posto, unidade, acessante, fim); time = start of vigência (UTC midnight). Fields
  keep the exact decimal text (``tusd="593.08"``), the REH and the sigla. Re-pulling writes the same keys, so
  a re-pull overwrites instead of duplicating, and two replicas pulling at once write identical points.
* ``aneel_bandeira`` — one point per month (flag, adder); ``aneel_bandeira_adicional`` — per flag and
  resolution start.
* ``aneel_sync`` — one point per pull attempt (ok, counts, error, replica) — the data's age comes from here.

Readers use :class:`AneelData`: it loads the books from InfluxDB and keeps the last good copy in memory, so
the API still answers (with the age of its data) when ANEEL, or even InfluxDB, is down.
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
from decimal import Decimal
from typing import Any, Final

import msgspec

from backend.aneel import AneelClient, AneelError
from backend.aneel_records import BandeiraAdder, BandeiraMonth, TariffRecord
from backend.aneel_sites import SiteConfig
from backend.errors import InfluxError, InfluxQueryError
from backend.influx import InfluxClient, quote_ident
from backend.lineprotocol import point
from backend.settings import Settings
from backend.tariffs import BandeiraBook, TariffBook

log = logging.getLogger(__name__)

RP_ANEEL: Final = "aneel"
TARIFF: Final = "aneel_tarifa"
FLAG: Final = "aneel_bandeira"
ADDER: Final = "aneel_bandeira_adicional"
SYNC: Final = "aneel_sync"
SUBGROUPS: Final = ["B1", "B2", "B3"]


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def _tag(value: str) -> str:
    return value if value else "-"


def tariff_line(r: TariffRecord) -> str:
    tags = {"cnpj": r.cnpj, "base": r.base, "subgrupo": r.subgroup, "modalidade": r.modality, "classe": r.klass,
            "subclasse": r.subclass, "detalhe": r.detail, "posto": r.posto, "unidade": r.tusd_unit,
            "acessante": r.accessing_agent, "fim": r.end.isoformat()}
    fields: dict[str, str] = {"tusd": str(r.tusd), "te": str(r.te_rs_mwh), "reh": r.reh, "sigla": r.distributor,
                              "gerado": r.generated.isoformat() if r.generated else ""}
    return point(TARIFF, {k: _tag(v) for k, v in tags.items()}, fields, _ms(r.start))


def _tariff_from_row(row: dict[str, Any]) -> TariffRecord:
    gen = row.get("gerado") or ""
    return TariffRecord(
        reh=row.get("reh") or "", distributor=row["sigla"], cnpj=row["cnpj"], start=_day(int(row["time"])),
        end=dt.date.fromisoformat(row["fim"]), base=row["base"], subgroup=row["subgrupo"],
        modality=row["modalidade"], klass=row["classe"], subclass=row["subclasse"], detail=row["detalhe"],
        posto=row["posto"], tusd=Decimal(row["tusd"]), tusd_unit=row["unidade"], te_rs_mwh=Decimal(row["te"]),
        accessing_agent=row["acessante"], generated=dt.date.fromisoformat(gen) if gen else None,
    )


class SyncReport(msgspec.Struct):
    """What one pull did (``POST /api/v1/aneel/sync`` returns it)."""

    ok: bool
    started_at: str
    duration_s: float
    distributors: list[str] = msgspec.field(default_factory=list)
    tariffs: int = 0
    added: list[str] = msgspec.field(default_factory=list)
    changed: list[str] = msgspec.field(default_factory=list)
    unchanged: int = 0
    flags_added: list[str] = msgspec.field(default_factory=list)
    flags_changed: list[str] = msgspec.field(default_factory=list)
    skipped_records: int = 0
    error: str = ""


class SyncStatus(msgspec.Struct):
    last_ok_at: str | None
    last_attempt_at: str | None
    last_error: str
    age_s: float | None
    """Seconds since the last successful pull (None = never)."""
    attempt_age_s: float | None = None
    """Seconds since the last attempt, successful or not."""


def _key_text(r: TariffRecord) -> str:
    return (f"{r.distributor} {r.subgroup} {r.modality} {r.subclass} {r.posto} {r.base} "
            f"{r.start.isoformat()}..{r.end.isoformat()}")


class AneelStore:
    """Reads and writes the ANEEL measurements of one database."""

    def __init__(self, influx: InfluxClient, db: str) -> None:
        self.influx = influx
        self.db = db

    def _t(self, measurement: str) -> str:
        return f"{quote_ident(self.db)}.{quote_ident(RP_ANEEL)}.{quote_ident(measurement)}"

    async def ensure_schema(self) -> None:
        db = quote_ident(self.db)
        await self.influx.execute(f"CREATE DATABASE {db}", epoch=None)
        try:
            await self.influx.execute(
                f"CREATE RETENTION POLICY {quote_ident(RP_ANEEL)} ON {db} DURATION INF REPLICATION 1", epoch=None)
        except InfluxQueryError as exc:
            if "already exists" not in str(exc):
                raise

    async def write(self, lines: Iterable[str]) -> None:
        body = list(lines)
        for i in range(0, len(body), 5000):
            await self.influx.write(body[i:i + 5000], self.db, rp=RP_ANEEL, precision="ms")

    async def tariffs(self) -> list[TariffRecord]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(TARIFF)}", db=self.db)
        return [_tariff_from_row(r) for r in rows]

    async def months(self) -> list[BandeiraMonth]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(FLAG)}", db=self.db)
        return [BandeiraMonth(month=_day(int(r["time"])), flag=r["flag"], adder_rs_mwh=Decimal(r["adder"]),
                              generated=dt.date.fromisoformat(r["gerado"]) if r.get("gerado") else None)
                for r in rows]

    async def adders(self) -> list[BandeiraAdder]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(ADDER)}", db=self.db)
        return [BandeiraAdder(resolution=r["resolution"], start=_day(int(r["time"])), flag=r["flag"],
                              adder_rs_mwh=Decimal(r["adder"])) for r in rows]

    async def record_sync(self, report: SyncReport, replica: str) -> None:
        fields: dict[str, Any] = {"ok": report.ok, "added": len(report.added), "changed": len(report.changed),
                                  "tariffs": report.tariffs, "error": report.error[:500], "replica": replica}
        await self.write([point(SYNC, {}, fields, int(time.time() * 1000))])

    async def status(self) -> SyncStatus:
        ok = await self.influx.rows(f"SELECT last(tariffs) FROM {self._t(SYNC)} WHERE ok = true", db=self.db)
        last = await self.influx.rows(f"SELECT last(error) AS error FROM {self._t(SYNC)}", db=self.db)
        last_ok = int(ok[0]["time"]) if ok else None
        now = time.time() * 1000
        return SyncStatus(
            last_ok_at=_iso(last_ok), last_attempt_at=_iso(int(last[0]["time"])) if last else None,
            last_error=(last[0].get("error") or "") if last else "",
            age_s=round((now - last_ok) / 1000, 1) if last_ok else None,
            attempt_age_s=round((now - int(last[0]["time"])) / 1000, 1) if last else None,
        )


def _iso(ms: int | None) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat() if ms is not None else None


async def pull(client: AneelClient, sites: Iterable[SiteConfig]) -> tuple[list[TariffRecord], list[BandeiraMonth],
                                                                         list[BandeiraAdder], list[str]]:
    """Fetch what the configured sites need: B tariffs of their distributors (by CNPJ) and both flag tables."""
    cnpjs: list[str] = []
    for s in sites:
        digits = re.sub(r"\D", "", s.distributor)
        cnpj = digits.zfill(14) if len(digits) >= 11 else await client.cnpj_of(s.distributor)
        if cnpj not in cnpjs:
            cnpjs.append(cnpj)
    tariffs: list[TariffRecord] = []
    for cnpj in cnpjs:
        tariffs += await client.tariffs({"NumCNPJDistribuidora": cnpj, "DscSubGrupo": SUBGROUPS,
                                         "DscBaseTarifaria": "Tarifa de Aplicação"})
    months = await client.bandeira_months()
    adders = await client.bandeira_adders()
    return tariffs, months, adders, cnpjs


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
    try:
        old_t = {r.natural_key(): r for r in await store.tariffs()}
        old_m = {m.month: m for m in await store.months()}
        report = SyncReport(ok=True, started_at=started_at, duration_s=0.0, distributors=cnpjs, tariffs=len(tariffs),
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
        lines = [tariff_line(r) for r in tariffs]
        lines += [point(FLAG, {}, {"flag": m.flag, "adder": str(m.adder_rs_mwh),
                                   "gerado": m.generated.isoformat() if m.generated else ""}, _ms(m.month))
                  for m in months]
        lines += [point(ADDER, {"flag": a.flag}, {"resolution": a.resolution, "adder": str(a.adder_rs_mwh)},
                        _ms(a.start)) for a in adders]
        await store.write(lines)
        report.duration_s = round(time.time() - started, 3)
        await store.record_sync(report, replica)
        return report
    except InfluxError as exc:
        return SyncReport(ok=False, started_at=started_at, duration_s=round(time.time() - started, 3),
                          error=f"InfluxDB: {exc}")


class AneelData:
    """The books the analytics use, loaded from InfluxDB and kept in memory as the last good copy."""

    def __init__(self, store: AneelStore, *, refresh_s: float = 60.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.tariffs = TariffBook([])
        self.flags = BandeiraBook([])
        self.loaded_at = 0.0
        self.load_error = ""
        self._lock = asyncio.Lock()

    async def load(self, *, force: bool = False) -> None:
        """Reload from InfluxDB when older than ``refresh_s``; on failure keep the previous copy."""
        async with self._lock:
            if not force and time.monotonic() - self.loaded_at < self.refresh_s and self.loaded_at:
                return
            try:
                tariffs = await self.store.tariffs()
                months = await self.store.months()
                adders = await self.store.adders()
            except InfluxError as exc:
                self.load_error = str(exc)
                log.warning("aneel data reload failed; serving the last good copy", extra={"error": str(exc)})
                return
            self.tariffs = TariffBook(tariffs)
            self.flags = BandeiraBook(months, adders)
            self.loaded_at = time.monotonic()
            self.load_error = ""


class AneelScheduler:
    """Daily pull inside the backend. Several replicas may run it: before pulling, each checks whether another
    one already pulled within the interval; if two pull at once they write identical points (idempotent)."""

    def __init__(self, settings: Settings, store: AneelStore, data: AneelData, sites: list[SiteConfig],
                 client: AneelClient) -> None:
        self.settings = settings
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
                await self.data.load(force=True)
            return report

    async def _due_in(self) -> float:
        try:
            st = await self.store.status()
        except InfluxError:
            return self.settings.aneel_retry_s
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
