"""The scheduled ONS pull: discover each dataset's files, read only what changed, write it, record what was read.

One pull, per dataset: ``package_show`` (the files' URLs) -> for each yearly file from the first wanted year,
``HEAD`` -> if ETag, Last-Modified and size equal what ``ons_arquivo`` says was read, nothing more; otherwise the
file is downloaded and parsed, the rows of each month whose digest changed are written (a revised month is
overwritten in place, an untouched one is not rewritten), and only then is the file's new state recorded. So a
pull that dies half-way is redone by the next one, and the current year's file, which grows every day, costs one
download and the writes of the month or two that changed.

A pull never raises for ONS or InfluxDB failures: its :class:`SyncReport` says what went wrong and the stored
data stays as it was. :class:`OnsScheduler` runs it inside the backend twice a day, after ONS's 12 h and 19 h
publications (Brasília time, ``BACKEND_ONS_SYNC_TIMES``); several replicas may run it: each first checks
whether a pull already succeeded since the latest scheduled time, and two pulls at once write identical points.
A failed pull is retried after ``BACKEND_ONS_RETRY_S``, doubling up to the next scheduled time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Literal

import msgspec

from backend.errors import ConfigError, InfluxError
from backend.metrics import Metrics
from backend.ons.catalog import DataFile, choose_files, resources_of
from backend.ons.client import FileMeta, OnsClient, OnsError, OnsUnavailable
from backend.ons.datasets import BALANCE, Dataset
from backend.ons.files import FileFormat, parse_file
from backend.ons.records import OnsFormatError, ParseStats
from backend.ons.store import FileState, OnsStore, daily_lines, digests, lines, local_day, months_of
from backend.settings import Settings
from protocol.timebase import TZ

log = logging.getLogger(__name__)
Action = Literal["inalterado", "lido", "falhou"]


class FileReport(msgspec.Struct):
    arquivo: str
    url: str
    acao: Action
    linhas: int = 0
    meses_gravados: list[str] = msgspec.field(default_factory=list)
    pontos: int = 0
    erro: str = ""


class SyncReport(msgspec.Struct):
    """What one pull did (``POST /api/v1/ons/sync`` returns it)."""

    ok: bool
    started_at: str
    duration_s: float = 0.0
    files_checked: int = 0
    files_read: int = 0
    points: int = 0
    parse: ParseStats = msgspec.field(default_factory=ParseStats)
    files: list[FileReport] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)


async def sync_file(client: OnsClient, store: OnsStore, dataset: Dataset, f: DataFile,
                    previous: FileState | None) -> tuple[FileReport, ParseStats]:
    """One file: HEAD, and when it changed, download, parse and write the changed months. ONS errors and
    unreadable files end in a ``falhou`` report; InfluxDB errors propagate (the pull stops)."""
    report = FileReport(arquivo=f.key, url=f.url, acao="inalterado")
    stats = ParseStats()
    try:
        meta = await client.head(f.url)
        if previous is not None and previous.url == f.url and meta.same_as(
                FileMeta(etag=previous.etag, last_modified=previous.last_modified, size=previous.size)):
            return report, stats
        data, meta = await client.download(f.url)
        parsed = parse_file(dataset, data)
    except (OnsError, OnsFormatError) as exc:
        report.acao, report.erro = "falhou", str(exc)
        return report, stats
    stats = parsed.stats
    month_at = months_of(parsed.rows)
    months = digests(parsed.rows, month_at)
    old = previous.digests if previous is not None else {}
    changed = {m for m, d in months.items() if old.get(m) != d}
    report.acao, report.linhas, report.meses_gravados = "lido", len(parsed.rows), sorted(changed)
    rows = [r for r in parsed.rows if month_at[r.ts_ms] in changed]
    body = lines(dataset, rows)
    if dataset is BALANCE:
        days = {local_day(ts) for ts, m in month_at.items() if m in changed}
        body = itertools.chain(body, daily_lines(parsed.rows, days))
    report.pontos = await store.write(body)
    await store.record_file(FileState(
        key=f.key, dataset=dataset.key, url=f.url, etag=meta.etag, last_modified=meta.last_modified, size=meta.size,
        format=parsed.format, rows=len(parsed.rows), digests=months, read_at=dt.datetime.now(dt.UTC).isoformat()))
    return report, stats


async def sync(client: OnsClient, store: OnsStore, datasets: Sequence[Dataset], *, first_year: int,
               prefer: FileFormat = "parquet", replica: str = "") -> SyncReport:
    """One pull of ``datasets`` (files from ``first_year`` on). Never raises for ONS or InfluxDB failures."""
    started = time.time()
    report = SyncReport(ok=False, started_at=dt.datetime.fromtimestamp(started, dt.UTC).isoformat())
    try:
        states = await store.file_states()
        for ds in datasets:
            try:
                package = await client.find_package(ds.slug)
            except OnsError as exc:
                report.errors.append(f"{ds.slug}: {exc}")
                if isinstance(exc, OnsUnavailable):
                    break  # the portal is down: the other datasets would wait through the same retries
                continue
            files = choose_files(ds, resources_of(package), first_year=first_year, prefer=prefer)
            if not files:
                report.errors.append(f"{ds.slug}: nenhum arquivo de {first_year} em diante")
            for f in reversed(files):  # newest first: a long first pull serves the current year soonest
                file_report, stats = await sync_file(client, store, ds, f, states.get(f.key))
                report.files_checked += 1
                report.files.append(file_report)
                report.parse.add(stats)
                if file_report.acao == "lido":
                    report.files_read += 1
                    report.points += file_report.pontos
                elif file_report.acao == "falhou":
                    report.errors.append(f"{f.key}: {file_report.erro}")
    except InfluxError as exc:
        report.errors.append(f"InfluxDB: {exc}")
    report.ok = not report.errors
    report.duration_s = round(time.time() - started, 3)
    with contextlib.suppress(InfluxError):
        await store.record_sync(ok=report.ok, files_read=report.files_read, points=report.points,
                                error="; ".join(report.errors), replica=replica)
    return report


def parse_times(text: str) -> list[dt.time]:
    """``"12:40,19:40"`` -> sorted local times; ConfigError names the setting."""
    out = []
    for part in text.split(","):
        try:
            out.append(dt.time.fromisoformat(part.strip()))
        except ValueError as exc:
            raise ConfigError(f"BACKEND_ONS_SYNC_TIMES: {part.strip()!r} não é um horário HH:MM") from exc
    if not out:
        raise ConfigError("BACKEND_ONS_SYNC_TIMES: nenhum horário")
    return sorted(out)


def slots_around(now: dt.datetime, times: Sequence[dt.time]) -> tuple[dt.datetime, dt.datetime]:
    """The latest scheduled time at or before ``now`` and the next one after it (Brasília time)."""
    local = now.astimezone(TZ)
    candidates = [dt.datetime.combine(local.date() + dt.timedelta(days=d), t, tzinfo=TZ)
                  for d in (-1, 0, 1) for t in times]
    return max(c for c in candidates if c <= local), min(c for c in candidates if c > local)


class OnsScheduler:
    """Twice-daily pulls inside the backend (see the module docstring)."""

    def __init__(self, settings: Settings, store: OnsStore, client: OnsClient, datasets: Sequence[Dataset],
                 *, first_year: int, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.client = client
        self.datasets = list(datasets)
        self.first_year = first_year
        self.times = parse_times(settings.ons_sync_times)
        self.last_report: SyncReport | None = None
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def run_once(self) -> SyncReport:
        async with self._lock:
            if self.settings.influx_manage_schema:  # InfluxDB may have been down when the app started
                with contextlib.suppress(InfluxError):
                    await self.store.ensure_schema()
            prefer: FileFormat = "csv" if self.settings.ons_format == "csv" else "parquet"
            report = await sync(self.client, self.store, self.datasets, first_year=self.first_year, prefer=prefer,
                                replica=self.settings.resolved_client_id())
            self.last_report = report
            self.failures = 0 if report.ok else self.failures + 1
            if report.ok:
                self._note_last_sync(0.0)
            return report

    def _note_last_sync(self, age_s: float | None) -> None:
        # From the sync log, so it covers pulls by other replicas too; Prometheus alerts on its age
        # (deploy/prometheus/alerts.yml, CDSOnsDataStale).
        if self.metrics is not None and age_s is not None:
            self.metrics.ons_last_sync.set(time.time() - age_s)

    async def due_in(self) -> float:
        """Seconds until the next pull should start (0 = now)."""
        now = dt.datetime.now(dt.UTC)
        latest, upcoming = slots_around(now, self.times)
        try:
            st = await self.store.status()
        except InfluxError:
            return self.settings.ons_retry_s
        self._note_last_sync(st.age_s)
        if st.age_s is not None and now.timestamp() - st.age_s >= latest.timestamp():
            return (upcoming - now).total_seconds()  # already pulled since the latest scheduled time
        if st.last_error and st.attempt_age_s is not None:  # the last attempt (ours or a peer's) failed
            backoff = min(self.settings.ons_retry_s * 2.0 ** max(0, self.failures - 1),
                          (upcoming - now).total_seconds())
            return max(0.0, float(backoff - st.attempt_age_s))
        return 0.0

    async def _loop(self) -> None:
        while True:
            wait = await self.due_in()
            if wait > 0:
                await asyncio.sleep(min(wait, 3600.0))
                continue
            report = await self.run_once()
            log.info("ons sync", extra={"ok": report.ok, "files_read": report.files_read, "points": report.points,
                                        "errors": report.errors[:3]})
            if not report.ok:
                await asyncio.sleep(min(self.settings.ons_retry_s, 60.0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ons-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
