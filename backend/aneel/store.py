"""ANEEL data in InfluxDB: idempotent upserts and the last good copy in memory.

Layout (retention policy ``aneel``, kept forever):

* ``aneel_tarifa`` — one point per tariff row. Tags = the row's natural key (CNPJ, base, subgrupo, modalidade,
  classe, subclasse, detalhe, posto, unidade, acessante, fim); time = start of vigência (UTC midnight). Fields
  keep the exact decimal text (``tusd="593.08"``), the REH and the sigla. Re-pulling writes the same keys, so
  a re-pull overwrites instead of duplicating, and two replicas pulling at once write identical points.
* ``aneel_bandeira`` — one point per month (flag, adder); ``aneel_bandeira_adicional`` — per flag and
  resolution start.
* ``aneel_componente`` — one point per Componentes Tarifárias row kept (``TUSD_FioB``), keyed like a tariff row
  plus the component name.
* ``aneel_sync`` — one point per pull attempt (ok, counts, error, replica) — the data's age comes from here.

Readers use :class:`AneelData`: it loads the books from InfluxDB and keeps the last good copy in memory, so
the API still answers (with the age of its data) when ANEEL, or even InfluxDB, is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from backend.aneel.components import FioBBook
from backend.aneel.records import BandeiraAdder, BandeiraMonth, ComponentRecord, TariffRecord
from backend.aneel.tariffs import BandeiraBook, TariffBook
from backend.errors import InfluxError
from backend.store.influx import InfluxClient, quote_ident
from backend.store.layout import (
    ANEEL_ADDER,
    ANEEL_COMPONENT,
    ANEEL_FLAG,
    ANEEL_SYNC,
    ANEEL_TARIFF,
    RP_ANEEL,
    ensure_policy,
    table,
)
from backend.store.lineprotocol import point

log = logging.getLogger(__name__)


def day_ms(day: dt.date) -> int:
    """A vigência date as the point time ANEEL rows are stored at (UTC midnight)."""
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
    return point(ANEEL_TARIFF, {k: _tag(v) for k, v in tags.items()}, fields, day_ms(r.start))


def component_line(r: ComponentRecord) -> str:
    tags = {"cnpj": r.cnpj, "componente": r.component, "base": r.base, "subgrupo": r.subgroup,
            "modalidade": r.modality, "classe": r.klass, "subclasse": r.subclass, "detalhe": r.detail,
            "posto": r.posto, "unidade": r.unit, "acessante": r.accessing_agent, "fim": r.end.isoformat()}
    fields = {"valor": str(r.value), "reh": r.reh, "sigla": r.distributor}
    return point(ANEEL_COMPONENT, {k: _tag(v) for k, v in tags.items()}, fields, day_ms(r.start))


def _component_from_row(row: dict[str, Any]) -> ComponentRecord:
    return ComponentRecord(
        reh=row.get("reh") or "", distributor=row["sigla"], cnpj=row["cnpj"], start=_day(int(row["time"])),
        end=dt.date.fromisoformat(row["fim"]), base=row["base"], subgroup=row["subgrupo"],
        modality=row["modalidade"], klass=row["classe"], subclass=row["subclasse"], detail=row["detalhe"],
        posto=row["posto"], unit=row["unidade"], component=row["componente"], value=Decimal(row["valor"]),
        accessing_agent=row["acessante"],
    )


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
    components: int = 0
    """TUSD Fio B rows pulled from Componentes Tarifárias (for GD II sites)."""
    components_error: str = ""
    """A failed components pull: the tariffs are still stored; GD II bills use the stored or configured Fio B."""
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


class AneelStore:
    """Reads and writes the ANEEL measurements of one database."""

    def __init__(self, influx: InfluxClient, db: str) -> None:
        self.influx = influx
        self.db = db

    def _t(self, measurement: str) -> str:
        return table(self.db, RP_ANEEL, measurement)

    async def ensure_schema(self) -> None:
        await self.influx.execute(f"CREATE DATABASE {quote_ident(self.db)}", epoch=None)
        await ensure_policy(self.influx, self.db, RP_ANEEL, "DURATION INF REPLICATION 1")

    async def write(self, lines: Iterable[str]) -> None:
        body = list(lines)
        for i in range(0, len(body), 5000):
            await self.influx.write(body[i:i + 5000], self.db, rp=RP_ANEEL, precision="ms")

    async def tariffs(self) -> list[TariffRecord]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(ANEEL_TARIFF)}", db=self.db)
        return [_tariff_from_row(r) for r in rows]

    async def components(self) -> list[ComponentRecord]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(ANEEL_COMPONENT)}", db=self.db)
        return [_component_from_row(r) for r in rows]

    async def months(self) -> list[BandeiraMonth]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(ANEEL_FLAG)}", db=self.db)
        return [BandeiraMonth(month=_day(int(r["time"])), flag=r["flag"], adder_rs_mwh=Decimal(r["adder"]),
                              generated=dt.date.fromisoformat(r["gerado"]) if r.get("gerado") else None)
                for r in rows]

    async def adders(self) -> list[BandeiraAdder]:
        rows = await self.influx.rows(f"SELECT * FROM {self._t(ANEEL_ADDER)}", db=self.db)
        return [BandeiraAdder(resolution=r["resolution"], start=_day(int(r["time"])), flag=r["flag"],
                              adder_rs_mwh=Decimal(r["adder"])) for r in rows]

    async def record_sync(self, report: SyncReport, replica: str) -> None:
        fields: dict[str, Any] = {"ok": report.ok, "added": len(report.added), "changed": len(report.changed),
                                  "tariffs": report.tariffs, "error": report.error[:500], "replica": replica}
        await self.write([point(ANEEL_SYNC, {}, fields, int(time.time() * 1000))])

    async def status(self) -> SyncStatus:
        ok, last = await asyncio.gather(  # two independent reads, side by side (every bill shows this status)
            self.influx.rows(f"SELECT last(tariffs) FROM {self._t(ANEEL_SYNC)} WHERE ok = true", db=self.db),
            self.influx.rows(f"SELECT last(error) AS error FROM {self._t(ANEEL_SYNC)}", db=self.db))
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


class AneelData:
    """The books the analytics use, loaded from InfluxDB and kept in memory as the last good copy."""

    def __init__(self, store: AneelStore, *, refresh_s: float = 60.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.tariffs = TariffBook([])
        self.flags = BandeiraBook([])
        self.fio_b = FioBBook([])
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
                components = await self.store.components()
            except InfluxError as exc:
                self.load_error = str(exc)
                log.warning("aneel data reload failed; serving the last good copy", extra={"error": str(exc)})
                return
            self.tariffs = TariffBook(tariffs)
            self.flags = BandeiraBook(months, adders)
            self.fio_b = FioBBook(components)
            self.loaded_at = time.monotonic()
            self.load_error = ""
