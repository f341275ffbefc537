"""Knowledge-base search and InfluxQL console latency: index build, search p50/p95, both endpoints end to end.

Starts its own influxd with authentication on (Debian's package, temporary folder, an admin user), a backend app
in-process (API only: no MQTT ingest, no rollups, no scheduled pulls) whose setup creates the console's READ-only
user, and writes a day of raw readings for one meter (one every 10 s). Then times:

* the knowledge index build (articles + docs/, cold stem cache), and ``KnowledgeBase.search`` /
  ``answer_what_is`` over a set of questions people ask (with accents, without, with typos);
* ``GET /api/v1/conhecimento`` through the app (token check, validation, JSON);
* the console's statement checks alone, and ``POST /api/v1/consultas/influxql`` through the app for three
  statements, against the floor measured in the same run: ``SHOW DATABASES`` posted straight to InfluxDB as the
  read-only user.

Target: p95 < 100 ms for both endpoints. Run:

    .venv/bin/python bench/knowledge.py          # 200 repetitions
    .venv/bin/python bench/knowledge.py --quick  # 30 repetitions
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
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.knowledge import KnowledgeBase
from backend.knowledge import text as knowledge_text
from backend.knowledge.sources import ARTICLES_DIR, REPO_DOCS_DIR
from backend.settings import Settings
from backend.store.console import check_statement
from backend.store.layout import AGGREGATED_RPS
from devstack.influxdb import InfluxService

ADMIN = ("admin", "bench-admin-secret")
RO = ("cds_console", "bench-console-secret")
DB = "bench_knowledge"
QUESTIONS = [
    "o que é bandeira vermelha", "bandera vermelah", "quanto custa a bandeira amarela", "tarifa branca vale a pena",
    "horario de ponta da cemig", "o que é TUSD", "icms por dentro", "por que minha conta veio tão alta",
    "custo de disponibilidade trifasico", "tensão precária 127 V", "subsistemas do SIN", "o que é o CMO",
    "creditos de energia solar", "fio b 2026", "fator de potencia baixo", "demanda maxima",
    "diferença entre kw e kwh", "ciclo de faturamento", "shared subscription replicas", "InfluxQL bound parameters",
    "pizza", "o que é",
]
STATEMENTS = {
    "SHOW MEASUREMENTS": "SHOW MEASUREMENTS",
    "1 meter, last hour, raw": "SELECT vrms, p FROM readings WHERE time > now() - 1h",
    "1 meter, day, 15-min means": "SELECT mean(p) FROM readings WHERE time > now() - 1d GROUP BY time(15m)",
}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(label: str, samples_s: list[float]) -> None:
    ms = [s * 1000 for s in samples_s]
    print(f"  {label:<56} p50 {pct(ms, 0.5):8.2f} ms   p95 {pct(ms, 0.95):8.2f} ms   (n={len(ms)})")


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


async def atimed(fn: Callable[[], Awaitable[Any]], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_index(reps: int) -> None:
    print("knowledge base (in-process)")
    builds = []
    for _ in range(5):
        knowledge_text.stem.cache_clear()
        base = KnowledgeBase(ARTICLES_DIR, REPO_DOCS_DIR)
        builds.append(base.stats().build_ms / 1000)
    stats = base.stats()
    print(f"  index: {stats.articles} articles + {stats.doc_sections} doc sections, {stats.words} distinct words")
    line("index build, cold stem cache (5 builds)", builds)
    searches: list[float] = []
    for q in QUESTIONS:
        searches += timed(lambda q=q: base.search(q, 5), max(1, reps // 10))
    line(f"search, {len(QUESTIONS)} questions", searches)
    typo = timed(lambda: base.search("subsistma nordesti com geraçao eolca", 5), reps)
    line("search with three typos to correct", typo)
    answers: list[float] = []
    for q in QUESTIONS:
        answers += timed(lambda q=q: base.answer_what_is(q), max(1, reps // 10))
    line("answer_what_is", answers)


async def bench_api(reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        influx = InfluxService(Path(tmp) / "influx", admin=ADMIN)
        influx.start(timeout=60)
        try:
            settings = Settings(influx_url=influx.url, influx_db=DB, influx_username=ADMIN[0],
                                influx_password=ADMIN[1], influx_readonly_username=RO[0],
                                influx_readonly_password=RO[1], jwt_secret="bench-" + "b" * 30, ingest_enabled=False,
                                rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False,
                                log_level="WARNING", **({"ons_sync_enabled": False}
                                                        if "ons_sync_enabled" in Settings.__struct_fields__ else {}))
            async with AsyncTestClient(create_app(settings)) as client:
                now_s = int(time.time())
                lines = [f"readings,site=s,gateway=g,device=00000000000000a1 vrms=127.{i % 10},p={100 + i % 50}"
                         f",energy_mwh={i * 3}i {(now_s - 86400 + i * 10) * 1000}" for i in range(8640)]
                for k in range(0, len(lines), 5000):
                    influx.write(DB, lines[k:k + 5000])
                headers = {"Authorization": f"Bearer {client.app.state.authenticator.issue('bench', 'admin')}"}
                print("GET /api/v1/conhecimento (in-process app, token check, JSON)")
                samples: list[float] = []
                for q in QUESTIONS:
                    samples += await atimed(lambda q=q: client.get(
                        "/api/v1/conhecimento", params={"q": q}, headers=headers), max(1, reps // 10))
                line(f"{len(QUESTIONS)} questions", samples)

                print("InfluxQL console")
                now_ns = time.time_ns()
                line("statement checks only (backend/store/console.py)", timed(lambda: check_statement(
                    STATEMENTS["1 meter, day, 15-min means"], now_ns=now_ns, max_raw_range_ns=7 * 86400 * 10**9,
                    uncapped_rps=AGGREGATED_RPS), reps))
                async with httpx.AsyncClient(base_url=influx.url, auth=RO) as raw:
                    line("floor: SHOW DATABASES to InfluxDB as the RO user", await atimed(
                        lambda: raw.post("/query", data={"q": "SHOW DATABASES"}), reps))
                for label, statement in STATEMENTS.items():
                    r = await client.post("/api/v1/consultas/influxql", json={"consulta": statement},
                                          headers=headers)
                    assert r.status_code == 200, r.text
                    rows = r.json()["linhas"]
                    line(f"POST .../influxql: {label} ({rows} rows)", await atimed(
                        lambda s=statement: client.post(
                            "/api/v1/consultas/influxql", json={"consulta": s}, headers=headers), reps))
        finally:
            influx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="30 repetitions instead of 200")
    args = parser.parse_args()
    reps = 30 if args.quick else 200
    bench_index(reps)
    asyncio.run(bench_api(reps))
    print("note: p50/p95 of wall time on this machine; the endpoint figures include the in-process ASGI client")


if __name__ == "__main__":
    main()
