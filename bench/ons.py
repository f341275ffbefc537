"""ONS pipeline: pull time for a year of hourly balance, and the latencies of the grid endpoints.

Starts its own influxd (Debian's package, temporary folder) and the fake ONS (devstack/ons_fake.py), then:

1. **Pull**: one year (2025) of the hourly energy balance, all subsystems (the real ``sync``: HEAD, download,
   parse, write, record), from Parquet and from CSV, into fresh databases. The fake's files are generated before
   the clock starts, so the figure is the backend's. Measured in the same run, the raw limit: writing the same
   line-protocol points straight to InfluxDB in the same chunks, with no HTTP download and no parsing.
2. **Endpoints**: with 2025 and 2026 (to 2026-08-26) of balance, load curve and CMO stored, and a site with 30 days
   of 15-minute readings, p50/p95 of ``/api/v1/ons/balanco`` (hour/day/month), ``/agora``, ``/cmo`` and
   ``/api/v1/analytics/renovavel`` through the real app (Litestar in-process, JWT, JSON), each next to the p50
   of its main InfluxQL query sent raw (the floor the endpoint cannot beat; each endpoint also reads the data's
   age: two more small queries). Day and month buckets read the daily series the pull keeps. Target: p95 < 100 ms.

Run: ``.venv/bin/python bench/ons.py`` (``--runs 30``).
"""

# ruff: noqa: E402  (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from bench/: keep bench/ (whose gateway.py would shadow the package) off the import path.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse
import asyncio
import datetime as dt
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.ons.client import OnsClient
from backend.ons.datasets import BALANCE, DATASETS
from backend.ons.files import parse_file
from backend.ons.store import WRITE_CHUNK, OnsStore, lines
from backend.ons.sync import sync
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ONS_BALANCE, ONS_BALANCE_DAY, ONS_CMO, RP_ONS, ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker
from devstack.influxdb import InfluxService
from devstack.ons_fake import FakeOns
from protocol.mqtt import Reading
from protocol.timebase import TZ

DEVICE = "00000000000000b1"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    for _ in range(3):
        await fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def bench_pull(influx_url: str, fake: FakeOns) -> None:
    pkg = fake.package("balanco")
    for fmt in ("parquet", "csv"):
        fake.file(pkg, 2025, fmt)  # generate before the clock starts
    async with InfluxClient(influx_url) as influx, OnsClient(fake.url) as client:
        for fmt in ("parquet", "csv"):
            store = OnsStore(influx, f"bench_pull_{fmt}")
            await store.ensure_schema()
            t0 = time.perf_counter()
            report = await sync(client, store, [BALANCE], first_year=2025, prefer=fmt)  # type: ignore[arg-type]
            pull_s = time.perf_counter() - t0
            assert report.ok, report.errors
            t0 = time.perf_counter()
            parsed = parse_file(BALANCE, fake.file(pkg, 2025, fmt).body)
            parse_s = time.perf_counter() - t0
            body = list(lines(BALANCE, parsed.rows))
            raw = OnsStore(influx, f"bench_raw_{fmt}")
            await raw.ensure_schema()
            t0 = time.perf_counter()
            for i in range(0, len(body), WRITE_CHUNK):
                await influx.write(body[i:i + WRITE_CHUNK], raw.db, rp=RP_ONS, precision="ms")
            raw_s = time.perf_counter() - t0
            print(f"pull 2025 balance ({fmt:7s}): {pull_s:6.2f} s for {report.points} points "
                  f"({len(fake.file(pkg, 2025, fmt).body) / 1e6:.1f} MB file, {report.parse.rows} rows, "
                  f"parse alone {parse_s:.2f} s); raw /write of the same points {raw_s:.2f} s; "
                  f"ratio {pull_s / raw_s:.2f}x", flush=True)
            for db in (store.db, raw.db):
                await influx.execute(f'DROP DATABASE "{db}"', epoch=None)


async def load_site(settings: Settings) -> None:
    async with InfluxClient(settings.influx_url) as influx:
        await ensure_schema(influx, settings)
        t = dt.datetime(2026, 7, 27, tzinfo=TZ)
        first, energy, seq, body = t, 1_000_000, 0, []
        while t <= dt.datetime(2026, 8, 27, tzinfo=TZ):
            body.append(reading_line("casa", "gw", Reading(device=DEVICE, boot=1, seq=seq, ts=int(t.timestamp() * 1000),
                                                           vrms=127.0, irms=1.0, p=500.0, s=520.0, pf=0.96,
                                                           freq=60.0, energy_mwh=energy)))
            energy += 125_000 if not 18 <= t.hour < 21 else 400_000
            seq += 1
            t += dt.timedelta(minutes=15)
        await ReadingStore(influx, settings).write(body, {DEVICE: (int(first.timestamp() * 1000),
                                                                   int(t.timestamp() * 1000))})
        await RollupWorker(influx, settings).run_once(now_ns=(int(time.time()) + 60) * 10**9)


async def bench_endpoints(influx_url: str, fake: FakeOns, runs: int, tmp: Path) -> None:
    sites = tmp / "sites.toml"
    sites.write_text(f'[[site]]\nid = "casa"\ndistributor = "CEMIG-D"\ndevices = ["{DEVICE}"]\n', encoding="utf-8")
    settings = Settings(influx_url=influx_url, influx_db="bench_ons", jwt_secret="b" * 40, ingest_enabled=False,
                        rollup_enabled=False, retention_raw="INF", log_level="WARNING", sites_file=str(sites),
                        aneel_sync_enabled=False, alerts_enabled=False, ons_sync_enabled=False,
                        ons_base_url=fake.url)
    await load_site(settings)
    async with InfluxClient(influx_url) as influx, OnsClient(fake.url) as client:
        store = OnsStore(influx, settings.influx_db)
        await store.ensure_schema()
        report = await sync(client, store, list(DATASETS.values()), first_year=2025)
        assert report.ok, report.errors
        print(f"stored for the endpoints: {report.points} points (2025 and 2026 of balance, load curve, CMO)",
              flush=True)
        t_bal, t_day, t_cmo = store.t(ONS_BALANCE), store.t(ONS_BALANCE_DAY), store.t(ONS_CMO)
        a, b = "'2026-08-20T03:00:00Z'", "'2026-08-27T03:00:00Z'"
        raw_queries = {
            "balanco hora 7 d SIN": f"SELECT sum(mwh), count(mwh) FROM {t_bal} WHERE time >= {a} AND time < {b} "
                                    "GROUP BY time(1h), source fill(none)",
            "balanco dia 31 d SE": f"SELECT sum(mwh), sum(horas) FROM {t_day} WHERE time >= '2026-07-27T03:00:00Z' "
                                   f"AND time < {b} AND subsystem = 'SE' GROUP BY time(1d), source fill(none) "
                                   "tz('America/Sao_Paulo')",
            "balanco mes 1 ano SIN": f"SELECT sum(mwh), sum(horas) FROM {t_day} WHERE time >= '2025-08-27T03:00:00Z' "
                                     f"AND time < {b} GROUP BY time(1d), source fill(none) tz('America/Sao_Paulo')",
            "agora": f"SELECT mwh FROM {t_bal} WHERE time = '2026-08-27T02:00:00Z' GROUP BY subsystem, source",
            "cmo 7 d (4 subsistemas)": f"SELECT rs_mwh FROM {t_cmo} WHERE time >= {a} AND time < {b} "
                                       "GROUP BY subsystem",
            "renovavel 30 d": f"SELECT sum(mwh) FROM {t_bal} WHERE time >= '2026-07-28T03:00:00Z' AND time < {b} "
                              "AND subsystem = 'SE' GROUP BY time(1h), source fill(none)",
        }
        floor = await timed(lambda: influx.execute("SHOW DATABASES", epoch=None), runs)
        raw = {name: await timed(functools.partial(influx.rows, q, db=store.db), runs)
               for name, q in raw_queries.items()}
    requests = {
        "balanco hora 7 d SIN": ("/api/v1/ons/balanco", {"inicio": "2026-08-20", "fim": "2026-08-26"}),
        "balanco dia 31 d SE": ("/api/v1/ons/balanco", {"subsistema": "SE", "granularidade": "dia",
                                                        "inicio": "2026-07-27", "fim": "2026-08-26"}),
        "balanco mes 1 ano SIN": ("/api/v1/ons/balanco", {"granularidade": "mes", "inicio": "2025-08-27",
                                                          "fim": "2026-08-26"}),
        "agora": ("/api/v1/ons/agora", {}),
        "cmo 7 d (4 subsistemas)": ("/api/v1/ons/cmo", {"inicio": "2026-08-20", "fim": "2026-08-26"}),
        "renovavel 30 d": ("/api/v1/analytics/renovavel", {"site": "casa", "inicio": "2026-07-28",
                                                           "fim": "2026-08-26"}),
    }
    app = create_app(settings)
    async with AsyncTestClient(app) as http:
        headers = {"Authorization": f"Bearer {app.state.authenticator.issue('bench', 'viewer')}"}

        async def call(path: str, params: dict[str, str]) -> None:
            r = await http.get(path, params=params, headers=headers)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])

        print(f"\nfloor: SHOW DATABASES p50 {statistics.median(floor):.1f} ms", flush=True)
        print(f"{'endpoint':26s} {'p50 ms':>8s} {'p95 ms':>8s}   {'raw query p50':>13s}  ratio p50", flush=True)
        worst = 0.0
        for name, (path, params) in requests.items():
            t = await timed(functools.partial(call, path, params), runs)
            worst = max(worst, pct(t, 0.95))
            raw50 = statistics.median(raw[name])
            print(f"{name:26s} {statistics.median(t):8.1f} {pct(t, 0.95):8.1f}   {raw50:13.1f}  "
                  f"{statistics.median(t) / raw50:8.2f}x", flush=True)
        print(f"\nworst p95 {worst:.1f} ms (target < 100 ms): {'OK' if worst < 100 else 'OVER'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        influx = InfluxService(Path(tmp) / "influx")
        influx.start(timeout=60)
        fake = FakeOns(until=dt.date(2025, 12, 31)).start()
        try:
            asyncio.run(bench_pull(influx.url, fake))
            fake.publish(dt.date(2026, 8, 26))
            asyncio.run(bench_endpoints(influx.url, fake, args.runs, Path(tmp)))
        finally:
            fake.stop()
            influx.stop()


if __name__ == "__main__":
    main()
