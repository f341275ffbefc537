"""What the endpoints read: the balance per subsystem, the latest hour, the CMO, hourly renewable shares, and the
age of it all (InfluxQL in, typed answers out; the shaping is in :mod:`backend.ons.balance`).

Every answer carries :class:`DataAge`: the newest hour held, how old it is, and when ONS was last pulled. When ONS
is down the stored data keeps being served with its age; when InfluxDB itself is down, ``now()`` serves the last
answer it computed (``fonte = "memoria"``). Subsystem codes reach InfluxQL only as bound parameters, and only
after being checked against :data:`~backend.ons.datasets.SUBSYSTEMS`; the SIN is always the sum of the four.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Final

import msgspec

from backend.errors import InfluxError
from backend.ons.balance import BalanceBucket, Granularity, NowSubsystem, buckets, local_iso, now_view
from backend.ons.datasets import GENERATION, RENEWABLE, SIN, SUBSYSTEM_NAMES, SUBSYSTEMS
from backend.ons.store import OnsStore, SyncStatus
from backend.store.layout import ONS_BALANCE, ONS_BALANCE_DAY, ONS_CMO
from protocol.timebase import HOUR_MS

TZ_CLAUSE: Final = "tz('America/Sao_Paulo')"
MAX_DAYS: Final[dict[str, int]] = {"hora": 93, "dia": 800, "mes": 3700, "cmo": 93}
"""Longest period, in local days, served by the balance at each granularity and by the CMO (the API's limits,
shared with the questions engine so that an answer and its ``consulta`` accept the same periods)."""


class NoGridData(LookupError):
    """Nothing from ONS stored yet (and no copy in memory)."""


class DataAge(msgspec.Struct):
    hora_mais_recente: str | None
    """Local start of the newest hour of the energy balance held."""
    idade_s: float | None
    """Seconds from the end of that hour to now (ONS publishes D-1 or D-2: a day or two is normal)."""
    ultima_sincronizacao: str | None
    """Last successful pull from ONS (UTC)."""
    ultima_tentativa: str | None
    erro_ultima_tentativa: str
    desatualizado: bool
    """True when the newest hour is older than BACKEND_ONS_STALE_S (ONS or the pulls are down)."""
    fonte: str = "influxdb"


class CmoPoint(msgspec.Struct, frozen=True):
    inicio: str
    rs_mwh: float


class CmoSeries(msgspec.Struct, frozen=True):
    subsistema: str
    nome: str
    pontos: list[CmoPoint]
    media: float | None
    minimo: float | None
    maximo: float | None


class NowOut(msgspec.Struct):
    subsistemas: list[NowSubsystem]
    unidade: str
    idade_dos_dados: DataAge


def _where(start_ms: int, end_ms: int, subsystem: str) -> tuple[str, dict[str, str]]:
    where = f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"
    if subsystem == SIN:
        return where, {}
    if subsystem not in SUBSYSTEMS:
        raise ValueError(f"unknown subsystem {subsystem!r}")
    return where + " AND subsystem = $subsystem", {"subsystem": subsystem}


class GridData:
    """Queries over the stored ONS series of one database."""

    def __init__(self, store: OnsStore, *, stale_s: float) -> None:
        self.store = store
        self.stale_s = stale_s
        self._last_now: NowOut | None = None
        self._last_now_at = 0.0

    async def latest_hours(self) -> dict[str, int]:
        """Subsystem -> start (UTC ms) of its newest balance hour."""
        rows = await self.store.influx.rows(
            f"SELECT max(ultima) AS ultima FROM {self.store.t(ONS_BALANCE_DAY)} GROUP BY subsystem", db=self.store.db)
        return {r["subsystem"]: int(r["ultima"]) for r in rows if r.get("subsystem") in SUBSYSTEMS and r.get("ultima")}

    async def age(self, latest: dict[str, int] | None = None) -> DataAge:
        try:
            status: SyncStatus | None = await self.store.status()
        except InfluxError:
            status = None
        if latest is None:
            try:
                latest = await self.latest_hours()
            except InfluxError:
                latest = {}
        newest = max(latest.values()) if latest else None
        age = round(time.time() - (newest + HOUR_MS) / 1000, 1) if newest is not None else None
        return DataAge(hora_mais_recente=local_iso(newest) if newest is not None else None, idade_s=age,
                       ultima_sincronizacao=status.last_ok_at if status else None,
                       ultima_tentativa=status.last_attempt_at if status else None,
                       erro_ultima_tentativa=status.last_error if status else "estado indisponível",
                       desatualizado=age is None or age > self.stale_s)

    async def balance(self, subsystem: str, start_ms: int, end_ms: int,
                      granularity: Granularity) -> list[BalanceBucket]:
        """Buckets of the balance of one subsystem (or SIN = the four summed) in ``[start_ms, end_ms)``."""
        where, params = _where(start_ms, end_ms, subsystem)
        if granularity == "hora":
            q = (f"SELECT sum(mwh) AS mwh, count(mwh) AS n FROM {self.store.t(ONS_BALANCE)} WHERE {where} "
                 "GROUP BY time(1h), source fill(none)")
        else:  # the daily series: 24 times fewer points
            q = (f"SELECT sum(mwh) AS mwh, sum(horas) AS n FROM {self.store.t(ONS_BALANCE_DAY)} WHERE {where} "
                 f"GROUP BY time(1d), source fill(none) {TZ_CLAUSE}")
        rows = await self.store.influx.rows(q, db=self.store.db, params=params)
        per_hour = len(SUBSYSTEMS) if subsystem == SIN else 1
        points = [(int(r["time"]), str(r["source"]), float(r["mwh"]), math.ceil(int(r["n"]) / per_hour))
                  for r in rows if r.get("mwh") is not None]
        return buckets(points, granularity)

    async def now(self) -> NowOut:
        """The newest hour of each subsystem, and SIN at the newest hour all four have."""
        try:
            latest = await self.latest_hours()
            if not latest:
                raise NoGridData("sem dados do ONS")
            # The newest hours and the sync status are independent reads (age() keeps its own errors).
            rows, age = await asyncio.gather(self.store.influx.rows(
                f"SELECT mwh FROM {self.store.t(ONS_BALANCE)} WHERE time >= {min(latest.values())}ms AND "
                f"time <= {max(latest.values())}ms GROUP BY subsystem, source", db=self.store.db), self.age(latest))
        except InfluxError:
            if self._last_now is None:
                raise
            return self._from_memory(self._last_now)
        at: dict[tuple[str, int], dict[str, float]] = {}
        for r in rows:
            at.setdefault((r["subsystem"], int(r["time"])), {})[r["source"]] = float(r["mwh"])
        views = [now_view(s, SUBSYSTEM_NAMES[s], latest[s], at.get((s, latest[s]), {}))
                 for s in SUBSYSTEMS if s in latest]
        common = min(latest.values())
        if len(latest) == len(SUBSYSTEMS):
            total: dict[str, float] = {}
            for s in SUBSYSTEMS:
                for source, value in at.get((s, common), {}).items():
                    total[source] = total.get(source, 0.0) + value
            views.append(now_view(SIN, SUBSYSTEM_NAMES[SIN], common, total))
        out = NowOut(subsistemas=views, unidade="MWmed", idade_dos_dados=age)
        self._last_now, self._last_now_at = out, time.time()
        return out

    def _from_memory(self, cached: NowOut) -> NowOut:
        """The last answer, aged by the time since it was computed (InfluxDB is down)."""
        age = cached.idade_dos_dados
        idade = round(age.idade_s + time.time() - self._last_now_at, 1) if age.idade_s is not None else None
        return NowOut(subsistemas=cached.subsistemas, unidade=cached.unidade, idade_dos_dados=msgspec.structs.replace(
            age, idade_s=idade, fonte="memoria", desatualizado=idade is None or idade > self.stale_s,
            erro_ultima_tentativa="banco de dados indisponível: última resposta calculada, em memória"))

    async def cmo(self, subsystems: Sequence[str], start_ms: int, end_ms: int) -> list[CmoSeries]:
        params = {f"s{i}": s for i, s in enumerate(subsystems) if s in SUBSYSTEMS}
        if len(params) != len(subsystems) or not params:
            raise ValueError(f"unknown subsystems {subsystems!r}")
        ors = " OR ".join(f"subsystem = ${k}" for k in params)
        rows = await self.store.influx.rows(
            f"SELECT rs_mwh FROM {self.store.t(ONS_CMO)} WHERE time >= {int(start_ms)}ms AND time < {int(end_ms)}ms "
            f"AND ({ors}) GROUP BY subsystem", db=self.store.db, params=params)
        series: dict[str, list[CmoPoint]] = {s: [] for s in subsystems}
        for r in rows:
            point = CmoPoint(inicio=local_iso(int(r["time"])), rs_mwh=round(float(r["rs_mwh"]), 2))
            series[r["subsystem"]].append(point)
        return [_cmo_series(s, pts) for s, pts in series.items()]

    async def renewable_shares(self, subsystem: str, start_ms: int, end_ms: int) -> dict[int, float]:
        """Hour start (UTC ms) -> fraction (0-1) of the subsystem's generation from hydro, wind and solar."""
        where, params = _where(start_ms, end_ms, subsystem)
        sources = " OR ".join(f"source = '{s}'" for s in GENERATION)  # our own constants
        rows = await self.store.influx.rows(
            f"SELECT sum(mwh) AS mwh FROM {self.store.t(ONS_BALANCE)} WHERE {where} AND ({sources}) "
            "GROUP BY time(1h), source fill(none)", db=self.store.db, params=params)
        gen: dict[int, list[float]] = {}
        for r in rows:
            both = gen.setdefault(int(r["time"]), [0.0, 0.0])
            both[1] += float(r["mwh"])
            if r["source"] in RENEWABLE:
                both[0] += float(r["mwh"])
        return {t: ren / total for t, (ren, total) in gen.items() if total > 0}


def _cmo_series(code: str, points: list[CmoPoint]) -> CmoSeries:
    values = [p.rs_mwh for p in points]
    return CmoSeries(subsistema=code, nome=SUBSYSTEM_NAMES[code], pontos=points,
                     media=round(sum(values) / len(values), 2) if values else None,
                     minimo=min(values) if values else None, maximo=max(values) if values else None)

