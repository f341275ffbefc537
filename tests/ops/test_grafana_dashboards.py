"""deploy/grafana: every InfluxQL query of every dashboard panel and template variable runs against a real InfluxDB
holding real data, as Grafana sends it and as the user Grafana is provisioned with, and returns values.

InfluxQL answers a misspelt field, measurement or retention policy with an empty result, not an error, so a
dashboard drifts silently when the storage layout changes. Here the data goes in through the backend's own write
path (``ReadingStore``, then a rollup pass: the 1-minute and 1-hour rollups, the 15-minute, hourly and daily energy
series, a data gap) and an ANEEL sync record through ``AneelStore``; Grafana's macros are replaced by what Grafana
sends for the dashboard's default time range (``$timeFilter`` as an absolute range in ms, ``$__interval`` as the
data source's minimum of 1m, ``$site`` and a multi-value ``$device`` as Grafana's regex ``(a|b)``); each query is
a GET on ``/query`` with the backend's READ-only InfluxDB user on a server with authentication on, like the
provisioned data source. Prometheus panels are checked by test_prometheus_rules.py (their metric names).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from backend.aneel.store import AneelStore, SyncReport
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.lineprotocol import reading_line
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker
from devstack.influxdb import InfluxService, influxd_binary
from devstack.processes import ServiceNotInstalledError
from protocol.mqtt import Reading
from protocol.timebase import TZ
from tests.ops.metricnames import REPO

GRAFANA = REPO / "deploy" / "grafana"
ADMIN = ("admin", "grafana-test-admin")
READER = ("grafana_leitura", "grafana-test-reader")
SITE = "casa_grafana"
DEVICES = {"00000000000000a1": 800.0, "00000000000000a2": 150.0}
GAPPED = "00000000000000a2"
STEP_MS = 10_000
HOURS = 4


@dataclass(frozen=True)
class Seeded:
    influx: InfluxService
    db: str


@dataclass(frozen=True)
class Query:
    where: str
    text: str
    time_from: str
    """The dashboard's default range start (``now-6h``, ``now-7d/d``); it ends now."""


def datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "cds.yaml").read_text(encoding="utf-8"))
    return {ds["uid"]: ds for ds in doc["datasources"]}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def influx_queries() -> list[Query]:
    """Every InfluxQL query of the dashboards: panel targets and template variables."""
    out = []
    for name, dash in dashboards().items():
        start = dash["time"]["from"]
        assert dash["time"]["to"] == "now", name
        for var in dash["templating"]["list"]:
            if var["datasource"]["type"] == "influxdb":
                out.append(Query(f"{name}: variable {var['name']}", var["query"], start))
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "influxdb":
                    out.append(Query(f"{name}: {panel['title']} {target['refId']}", target["query"], start))
    return out


def range_start_ms(spec: str, now: dt.datetime) -> int:
    """Grafana's relative time ``now-<n><m|h|d>``, optionally rounded down to the local day (``/d``)."""
    m = re.fullmatch(r"now-(\d+)([mhd])(/d)?", spec)
    assert m, f"time range the test does not know: {spec}"
    unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    start = now.astimezone(TZ) - dt.timedelta(**{unit: int(m.group(1))})
    if m.group(3):
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp() * 1000)


def grafana_render(query: Query) -> str:
    """The query as Grafana sends it for the dashboard's default range, with every device selected."""
    now = dt.datetime.now(dt.UTC)
    values = {
        "timeFilter": f"time >= {range_start_ms(query.time_from, now)}ms and time <= {int(now.timestamp() * 1000)}ms",
        "__interval": "1m",
        "site": SITE,
        "device": "(" + "|".join(sorted(DEVICES)) + ")",
    }
    rendered = re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), query.text)
    left = re.findall(r"\$\w+|\$\{", rendered)  # the "$/" that closes an anchored regex is not a macro
    assert not left, f"macros the test does not know: {left}"
    return rendered


def readings(start_ms: int) -> list[str]:
    """``HOURS`` of readings every 10 s for two meters of one gateway; the second is silent for 30 minutes in the
    second hour (a data gap of the energy series)."""
    lines = []
    gap = (start_ms + 75 * 60_000, start_ms + 105 * 60_000)
    for i in range(HOURS * 3_600_000 // STEP_MS + 1):
        t = start_ms + i * STEP_MS
        for n, (device, watts) in enumerate(sorted(DEVICES.items())):
            if device == GAPPED and gap[0] <= t < gap[1]:
                continue
            lines.append(reading_line(SITE, "gw-1", Reading(
                device=device, boot=1, seq=i, ts=t, vrms=220.0 + n, irms=watts / 220, p=watts, s=watts * 1.05,
                pf=0.95, freq=60.0, energy_mwh=10_000_000 + int(watts * i * STEP_MS / 3_600))))
    return lines


async def seed(influx: InfluxService, settings: Settings, start_ms: int) -> None:
    async with InfluxClient(influx.url, username=ADMIN[0], password=ADMIN[1]) as client:
        await ensure_schema(client, settings)  # also creates the READ-only user, as the backend does at start-up
        lines = readings(start_ms)
        spans = {d: (start_ms, start_ms + HOURS * 3_600_000) for d in DEVICES}
        await ReadingStore(client, settings).write(lines, spans)
        # Dirty marks carry the write time: a pass "10 s from now" processes every mark written so far.
        await RollupWorker(client, settings).run_once(now_ns=time.time_ns() + 10 * 10**9)
        aneel = AneelStore(client, settings.influx_db)
        await aneel.ensure_schema()
        await aneel.record_sync(SyncReport(ok=True, started_at="", duration_s=1.0, tariffs=9), "cds-backend-1")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """An influxd with authentication on, the backend's schema and READ-only user, and the seeded data: the last
    ``HOURS`` hours (so the ANEEL sync record, written now, falls in the dashboards' range too)."""
    try:
        influxd_binary()
    except ServiceNotInstalledError as exc:
        pytest.fail(f"{exc}. The tests need the real services: run `bash scripts/setup.sh`.", pytrace=False)
    influx = InfluxService(tmp_path_factory.mktemp("influxdb-grafana"), admin=ADMIN)
    influx.start(timeout=60)
    try:
        db = "cds_grafana"
        settings = Settings(influx_url=influx.url, influx_db=db, influx_username=ADMIN[0],
                            influx_password=ADMIN[1], influx_readonly_username=READER[0],
                            influx_readonly_password=READER[1], retention_raw="INF", retention_1m="INF",
                            rollup_settle_s=0.0)
        start_ms = (int(time.time()) // 60 - 1) * 60_000 - HOURS * 3_600_000
        asyncio.run(seed(influx, settings, start_ms))
        yield Seeded(influx, db)
    finally:
        influx.stop()


def test_dashboards_refer_to_the_provisioned_data_sources_only() -> None:
    uids = {uid: ds["type"] for uid, ds in datasources().items()}
    assert uids == {"cds-influxdb": "influxdb", "cds-prometheus": "prometheus"}
    for name, dash in dashboards().items():
        assert dash["timezone"] == TZ.key, name  # days (tz(), "now-7d/d") are Brasília days, as in the API
        panels = dash["panels"]
        assert len({p["id"] for p in panels}) == len(panels), name
        for panel in panels:
            refs = ([panel["datasource"]] if "datasource" in panel else []) + [
                t["datasource"] for t in panel.get("targets", [])]
            for ref in refs:
                assert uids.get(ref["uid"]) == ref["type"], f"{name}: {panel['title']}: {ref}"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cds.yaml").read_text(encoding="utf-8"))
    assert provider["providers"][0]["type"] == "file"


def test_influx_data_source_reads_as_the_read_only_user_with_get() -> None:
    ds = datasources()["cds-influxdb"]
    assert ds["jsonData"]["httpMode"] == "GET"
    assert ds["user"] == "${CDS_INFLUX_READONLY_USER}"
    assert ds["secureJsonData"]["password"] == "${CDS_INFLUX_READONLY_PASSWORD}"
    assert ds["jsonData"]["timeInterval"] == "1m"  # what $__interval becomes below


def test_the_energy_and_the_operations_dashboards_query_influxdb() -> None:
    where = {q.where.split(":")[0] for q in influx_queries()}
    assert where == {"cds-energia", "cds-operacao"}
    assert len(influx_queries()) >= 15


@pytest.mark.parametrize("query", influx_queries(), ids=lambda q: q.where)
def test_query_returns_values_as_the_read_only_user(query: Query, seeded: Seeded) -> None:
    q = grafana_render(query)
    resp = httpx.get(f"{seeded.influx.url}/query", timeout=30,
                     params={"db": seeded.db, "q": q, "epoch": "ms", "u": READER[0], "p": READER[1]})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 1 and "error" not in results[0], results
    series = results[0].get("series", [])
    rows = [row for s in series for row in s["values"]]
    assert rows, f"no rows: {q}"
    # a value besides the time column (an aggregate of a misspelt field is all nulls)
    values = [v for s in series for row in s["values"] for c, v in zip(s["columns"], row, strict=True)
              if c != "time"]
    assert any(v is not None for v in values), f"only nulls: {q}"


def test_the_read_only_user_cannot_write(seeded: Seeded) -> None:
    """The data source's user is the backend's READ-only user: InfluxDB refuses it anything but reading."""
    resp = httpx.post(f"{seeded.influx.url}/write", params={"db": seeded.db, "u": READER[0], "p": READER[1]},
                      content=b"readings,site=x p=1", timeout=30)
    assert resp.status_code == 403, resp.text
