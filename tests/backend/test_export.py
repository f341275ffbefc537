"""``GET /api/v1/exportacao`` against the real InfluxDB: a year of 1-minute rollups of three meters streamed as
Parquet (row count and consumption equal to the seeded data, peak memory printed), CSV in both dialects, and a
viewer of another site answered 404."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.analytics.export import parquet_stream, record_batches, windows
from backend.api.app import create_app
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from protocol.timebase import TZ
from tests.backend.conftest import make_settings, token

SITE, OTHER = "casa-export", "casa-outra"
METERS = [f"{0xe0 + i:016x}" for i in range(3)]
YEAR_START = dt.datetime(2024, 1, 1, tzinfo=TZ)
YEAR_END = dt.datetime(2025, 1, 1, tzinfo=TZ)


def minute_lines(device: str, start_ms: int, end_ms: int, energy0: int) -> Iterator[list[str]]:
    """1-minute rollup points (the r1m schema, the fields the export reads) in lists of 20 000, register continuous
    from ``energy0`` mWh; power follows the minute of the day so the energy is known exactly."""
    tags = f"readings,device={device},gateway=gw1,site={SITE}"
    chunk: list[str] = []
    energy = energy0
    for t in range(start_ms, end_ms, 60_000):
        p = 200 + (t // 60_000) % 1440 / 4
        step = int(p * 1000 / 60)
        chunk.append(f"{tags} n=60i,energy_first={energy}i,energy_last={energy + step}i,boot_min=1i,boot_max=1i,"
                     f"p_mean={p},vrms_mean=127.0,pf_mean=0.95 {t}")
        energy += step
        if len(chunk) == 20_000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def expected_kwh(start_ms: int, end_ms: int) -> float:
    return sum(int((200 + (t // 60_000) % 1440 / 4) * 1000 / 60) for t in range(start_ms, end_ms, 60_000)) / 1e6


YEAR_METERS = METERS[:1]
"""A year for one meter (527 040 rows) keeps the suite's time in bounds; bench-sized runs use more."""


async def seed(settings: Settings, start_ms: int, end_ms: int, meters: list[str] = METERS) -> None:
    async with InfluxClient(settings.influx_url) as client:
        await ensure_schema(client, settings)
        for i, dev in enumerate(meters):
            for chunk in minute_lines(dev, start_ms, end_ms, 1_000_000 * (i + 1)):
                await client.write(chunk, settings.influx_db, rp="r1m", precision="ms")


def ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


def test_windows_cover_the_period_once_and_stay_bounded() -> None:
    got = list(windows(0, 10 * 86_400_000, "1m", meters=100, chunk_rows=20_000))
    assert got[0][0] == 0 and got[-1][1] == 10 * 86_400_000
    assert all(a == prev_b for (a, _), (_, prev_b) in zip(got[1:], got, strict=False))
    assert max(b - a for a, b in got) // 60_000 * 100 <= 20_000
    assert list(windows(0, 5_000, "1h", meters=10**6, chunk_rows=1)) == [(0, 5_000)]  # at least one step


@pytest_asyncio.fixture
async def year_db(influx: Any, unique_id: str) -> AsyncIterator[Settings]:
    settings = Settings(influx_url=influx.url, influx_db=unique_id, retention_raw="INF", retention_1m="INF")
    await seed(settings, ms(YEAR_START), ms(YEAR_END), YEAR_METERS)
    yield settings
    async with InfluxClient(influx.url) as c:
        await c.execute(f'DROP DATABASE "{unique_id}"', epoch=None)


@pytest.mark.asyncio
async def test_year_of_minute_data_streams_as_parquet_with_bounded_memory(year_db: Settings, tmp_path: Path) -> None:
    a, b = ms(YEAR_START), ms(YEAR_END)
    out = tmp_path / "ano.parquet"
    pool = pa.default_memory_pool()
    async with InfluxClient(year_db.influx_url) as client:
        tracemalloc.start()
        t0 = time.perf_counter()
        with out.open("wb") as f:
            batches = record_batches(client, year_db.influx_db, "1m", SITE, None, a, b, year_db.export_chunk_rows)
            async for piece in parquet_stream(batches, "1m"):
                f.write(piece)
        elapsed = time.perf_counter() - t0
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        arrow_peak = pool.max_memory()  # before the read-back below, which loads the whole file
    meta = pq.ParquetFile(out).metadata
    table = pq.read_table(out)
    minutes = (b - a) // 60_000
    if table.num_rows != len(YEAR_METERS) * minutes:
        # Seen once under a CPU hog: exactly one 7-day shard's rows absent with no error from InfluxDB. Say which
        # weeks the export lacked and what InfluxDB counts there now, so the next occurrence names its cause.
        async with InfluxClient(year_db.influx_url) as client:
            weeks = await client.rows(f'SELECT count("n") FROM "{year_db.influx_db}"."r1m"."readings" '
                                      f"WHERE time >= {a}ms AND time < {b}ms GROUP BY time(7d)",
                                      db=year_db.influx_db)
            shards = await client.rows("SHOW SHARDS")
        counted = {r["time"]: r["count"] for r in weeks}
        floors = pa.compute.floor_temporal(table["time"], 7, "day").cast(pa.int64())
        exported = {v["values"]: v["counts"] for v in pa.compute.value_counts(floors).to_pylist()}
        differing = {t: (counted.get(t), exported.get(t)) for t in sorted(counted.keys() | exported.keys())
                     if counted.get(t) != exported.get(t)}
        pytest.fail(f"{table.num_rows} rows exported of {len(YEAR_METERS) * minutes}; weeks where InfluxDB now "
                    f"counts (first) other than the export (second): {differing}; shards (id, start): "
                    f"{[(r['id'], r['start_time']) for r in shards if r.get('database') == year_db.influx_db]}")
    assert meta.num_row_groups > 20  # written group by group, not as one table
    kwh = expected_kwh(a, b)
    for i, dev in enumerate(YEAR_METERS):
        rows = table.filter(pa.compute.equal(table["device"], dev))
        assert rows.num_rows == minutes
        assert pa.compute.sum(rows["consumo_kwh"]).as_py() == pytest.approx(kwh, rel=1e-9)
        last = pa.compute.max(rows["energy_last"]).as_py()
        assert (last - 1_000_000 * (i + 1)) / 1e6 == pytest.approx(kwh, rel=1e-12)
    print(f"\nexport of {table.num_rows:,} rows (1 year, 1-minute, {len(YEAR_METERS)} meter(s)): {elapsed:.1f} s, "
          f"{out.stat().st_size / 1e6:.1f} MB Parquet, Python peak {py_peak / 1e6:.1f} MB, "
          f"Arrow pool peak {arrow_peak / 1e6:.1f} MB")
    assert py_peak < 100e6


@pytest_asyncio.fixture
async def app(broker: Any, influx: Any, unique_id: str) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = make_settings(broker, influx, unique_id, ingest_enabled=False, rollup_enabled=False,
                             export_chunk_rows=5_000, retention_raw="INF", retention_1m="INF")
    await seed(settings, ms(dt.datetime(2024, 3, 1, tzinfo=TZ)), ms(dt.datetime(2024, 3, 4, tzinfo=TZ)))
    async with AsyncTestClient(create_app(settings)) as client:
        yield client
    async with InfluxClient(influx.url) as c:
        for db in (unique_id, settings.resolved_accounts_db()):
            await c.execute(f'DROP DATABASE "{db}"', epoch=None)


QUERY = {"site": SITE, "inicio": "2024-03-01", "fim": "2024-03-03", "nivel": "1m"}


@pytest.mark.asyncio
async def test_parquet_over_http_matches_the_seeded_data(app: AsyncTestClient[Any]) -> None:
    r = await app.get("/api/v1/exportacao", params={**QUERY, "formato": "parquet"}, headers=token(app))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.apache.parquet")
    assert "attachment" in r.headers["content-disposition"]
    table = pq.read_table(pa.BufferReader(r.content))
    a, b = ms(dt.datetime(2024, 3, 1, tzinfo=TZ)), ms(dt.datetime(2024, 3, 4, tzinfo=TZ))
    assert table.num_rows == 3 * (b - a) // 60_000
    assert pa.compute.sum(table["consumo_kwh"]).as_py() == pytest.approx(3 * expected_kwh(a, b), rel=1e-9)
    one = await app.get("/api/v1/exportacao", params={**QUERY, "device": METERS[1]}, headers=token(app))
    assert set(pq.read_table(pa.BufferReader(one.content))["device"].to_pylist()) == {METERS[1]}


@pytest.mark.asyncio
async def test_csv_machine_and_pt_br(app: AsyncTestClient[Any]) -> None:
    r = await app.get("/api/v1/exportacao", params={**QUERY, "formato": "csv", "fim": "2024-03-01"},
                      headers=token(app))
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert r.status_code == 200 and len(rows) == 3 * 1440
    assert rows[0]["time"].startswith("2024-03-01 03:00:00") and float(rows[0]["p_mean"]) > 0
    r = await app.get("/api/v1/exportacao", params={**QUERY, "formato": "csv-br", "fim": "2024-03-01"},
                      headers=token(app))
    assert r.content.startswith("\ufeff".encode())
    br = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
    assert len(br) == 3 * 1440 and br[0]["horario_brasilia"] == "01/03/2024 00:00:00"
    assert "," in br[1]["consumo_kwh"] and "." not in br[1]["consumo_kwh"]


@pytest.mark.asyncio
async def test_viewer_of_another_site_gets_404(app: AsyncTestClient[Any]) -> None:
    root = {"Authorization": f"Bearer {app.app.state.authenticator.issue('root', 'admin')}"}
    r = await app.post("/api/v1/admin/usuarios", headers=root,
                       json={"usuario": "vizinho", "senha": "senha-do-vizinho", "sites": {OTHER: "viewer"}})
    assert r.status_code == 201, r.text
    login = await app.post("/api/v1/auth/token", json={"username": "vizinho", "password": "senha-do-vizinho"})
    viewer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    hidden = await app.get("/api/v1/exportacao", params=QUERY, headers=viewer)
    assert hidden.status_code == 404 and hidden.json()["detail"] == f"Site '{SITE}' não encontrado."
    by_meter = await app.get("/api/v1/exportacao", params={**QUERY, "site": OTHER, "device": METERS[0]},
                             headers=viewer)
    assert by_meter.status_code == 404
    assert (await app.get("/api/v1/exportacao", params={**QUERY, "site": OTHER}, headers=viewer)).status_code == 200
