"""Backend ingest benchmark: MQTT -> backend (ack after write) -> queryable in InfluxDB, against raw InfluxDB.

Starts its own Mosquitto (shipped deploy/mosquitto/mosquitto.conf) and InfluxDB 1.x in a temporary folder and
the backend as a real ``python -m backend`` subprocess (ingest + rollups, as deployed), then prints:

1. raw InfluxDB line-protocol ingest of N readings (5,000-line requests, 2 in flight) — the limit;
2. MQTT batched: the same N readings as 500-reading batches, QoS 1, until all are queryable; ratio vs 1.; once
   as an older gateway sends them (no ``batch_id``: no receipts) and once with a ``batch_id`` per message, so the
   backend also publishes end-to-end receipts (counted by a subscriber on ``down/receipts``): both rates as a
   ratio to the raw limit, their ratio, and the MQTT bytes receipts add per reading (the ``batch_id`` field uplink,
   the receipt messages downlink);
3. MQTT one reading per message, with a ``batch_id`` each (the worst case for receipts: one id per reading);
4. end-to-end latency p50/p99 (publish -> visible to a query) at M meters x 1 reading/s;
5. analytics query latency through the rollups over a month of data for 100 meters (p50/p95).

For 5., the rollup RPs are filled directly with points of the rollup schema (backend/store/rollups.py) and of the
site energy series (backend/store/energy_series.py: ``site_energy`` per 15 min and per hour) derived from a
synthetic month of 1 s data: writing 260 M raw points and rolling them up would take hours here. Whole-site
questions are asked both of the per-meter rollups (as before the site series) and of the site series; kWh per
day per meter also of the devices' daily series (``energy_d``).

    .venv/bin/python bench/ingest.py [--quick] [--check]

``--check`` exits 1 when a ratio of the parts that ran drops below its floor in ``FLOORS`` (picked from runs on
the 2-core development machine, with margin for a shared, loaded machine: the raw limit is measured in the same
run, so the ratios hold where the rates do not).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.store.influx import InfluxClient  # noqa: E402
from backend.store.lineprotocol import reading_line  # noqa: E402
from backend.store.rollups import RAW_TO_1M  # noqa: E402,F401  (documents the schema mirrored below)
from devstack.influxdb import InfluxService  # noqa: E402
from devstack.mosquitto import MosquittoService  # noqa: E402
from devstack.processes import HOST, free_port  # noqa: E402
from protocol import mqtt  # noqa: E402
from protocol.mqtt import Reading, ReadingBatch  # noqa: E402

DAY_MS = 86_400_000

FLOORS = {
    "batched / raw": 0.35,  # 2.: 0.51-0.52 (2026-12-01), 0.42-0.43 (2026-12-02 --quick, raw 172-203 k/s)
    "batched with receipts / without": 0.8,  # 2.: 0.98 (2026-12-01), 1.06 and once 0.62 (2026-12-02 --quick, noise)
    "one per message / raw": 0.015,  # 3.: 0.023 and 0.027 (2026-12-02 --quick): per-message cost, raw ~190 k/s
    "latency: seen / sent": 0.99,  # 4.: every reading published must become queryable
}
"""``--check``: ratio name -> the lowest value that passes."""


def make_readings(n: int, devices: int, start_ms: int) -> list[Reading]:
    out = []
    per = n // devices
    for d in range(devices):
        dev = f"{d:016x}"
        for s in range(per):
            p = 500.0 + (s % 97)
            out.append(Reading(device=dev, boot=1, seq=s, ts=start_ms + s * 1000, vrms=127.0 + (s % 13) / 10,
                               irms=p / 127, p=p, s=p * 1.05, pf=0.95, freq=60.0, energy_mwh=1_000_000 + s * 150))
    return out


class Publisher:
    def __init__(self, broker: MosquittoService, inflight: int = 200) -> None:
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=paho.MQTTv5)
        self.c.max_inflight_messages_set(inflight)
        self.c.max_queued_messages_set(0)
        self.acked = 0
        self.lock = threading.Lock()
        self.c.on_publish = self._on_publish
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self.lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class ReceiptTap:
    """Counts the receipts the backend publishes (messages, batch ids, bytes on the wire)."""

    def __init__(self, broker: MosquittoService) -> None:
        self.messages = self.ids = self.wire_bytes = 0
        self.lock = threading.Lock()
        ready = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-receipts-{os.getpid()}",
                             protocol=paho.MQTTv5)  # fmt: skip
        self.c.on_connect = lambda c, *a: c.subscribe("cds/v1/+/+/down/receipts", qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        r = mqtt.receipt_decoder.decode(msg.payload)
        with self.lock:
            self.messages += 1
            self.ids += len(r.stored) + len(r.dead_lettered)
            # PUBLISH on the wire: fixed header, topic length + topic, packet id, properties length
            self.wire_bytes += len(msg.payload) + len(msg.topic) + 2 + 2 + 1 + (2 if len(msg.payload) < 16_000 else 3)

    def wait_ids(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.ids < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Backend:
    def __init__(self, broker: MosquittoService, influx: InfluxService, db: str, workdir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
        env.update({"BACKEND_MQTT_HOST": broker.host, "BACKEND_MQTT_PORT": str(broker.port),
                    "BACKEND_INFLUX_URL": influx.url, "BACKEND_INFLUX_DB": db, "BACKEND_PORT": str(self.port),
                    "BACKEND_MQTT_CLIENT_ID": f"bench-{db}", "BACKEND_MQTT_SHARE_GROUP": f"bench-{db}",
                    "BACKEND_LOG_LEVEL": "WARNING", "BACKEND_ALERTS_ENABLED": "false",
                    "BACKEND_ANEEL_SYNC_ENABLED": "false", "BACKEND_JWT_SECRET": "bench-secret-0123456789-0123456789",
                    "BACKEND_INGEST_FLUSH_MS": "20",
                    # Capacity, not policy: the per-gateway budgets stay in the path (a bucket check per message,
                    # a device-book lookup per reading, a claim per new meter) but sized for one bulk gateway.
                    "BACKEND_INGEST_GATEWAY_MESSAGES_PER_S": "1e9", "BACKEND_INGEST_GATEWAY_BURST": "1000000000",
                    "BACKEND_PROVISIONING_MAX_DEVICES_PER_GATEWAY": "100000",
                    "BACKEND_PROVISIONING_NEW_DEVICES_PER_HOUR": "100000"})
        env.update(extra_env or {})
        self.log = open(workdir / f"backend-{db}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "backend"]
        if shutil.which("setpriv"):  # dies with the bench even if it is killed
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{HOST}:{self.port}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("backend not ready")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def count(influx: InfluxService, db: str) -> int:
    rows = influx.rows(f'SELECT count(seq) FROM "{db}"."raw"."readings"', db=db)
    return int(rows[0]["count"]) if rows else 0


def wait_count(influx: InfluxService, db: str, n: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count(influx, db) >= n:
            return time.perf_counter()
        time.sleep(0.1)
    raise TimeoutError(f"{db}: only {count(influx, db)} of {n} readings queryable")


async def raw_ingest(influx: InfluxService, db: str, lines: list[str]) -> float:
    async with InfluxClient(influx.url, timeout=60) as client:
        await client.execute(f'CREATE DATABASE "{db}"', epoch=None)
        chunks = [lines[i:i + 5000] for i in range(0, len(lines), 5000)]
        sem = asyncio.Semaphore(2)

        async def one(chunk: list[str]) -> None:
            async with sem:
                await client.write(chunk, db, precision="ms")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in chunks))
        return time.perf_counter() - t0


class MqttRun(NamedTuple):
    seconds: float
    """From the first publish until every reading is queryable."""
    publish_s: float
    messages: int
    id_bytes: int
    """Uplink bytes of the ``"batch_id":"..."`` fields."""
    receipt_bytes: int
    """Downlink bytes of the receipts (MQTT PUBLISH packets)."""
    receipts: int


def mqtt_run(broker: MosquittoService, influx: InfluxService, tmp: Path, db: str, readings: list[Reading],
             per_msg: int, extra_env: dict[str, str] | None = None, batch_ids: bool = False) -> MqttRun:
    """Publish ``readings`` in messages of ``per_msg`` to a fresh backend; with ``batch_ids`` each message has one
    (so the backend receipts it) and the receipts are counted before returning."""
    backend = Backend(broker, influx, db, tmp, extra_env)
    tap = ReceiptTap(broker)
    try:
        site = "bench"
        by_dev: dict[str, list[Reading]] = {}
        for r in readings:
            by_dev.setdefault(r.device, []).append(r)
        payloads: list[bytes] = []
        for rs in by_dev.values():
            for i in range(0, len(rs), per_msg):
                batch_id = f"bench{db}-{len(payloads)}" if batch_ids else ""
                payloads.append(mqtt.json_encoder.encode(ReadingBatch(site=site, gateway="gw",
                                                                           readings=rs[i:i + per_msg],
                                                                           batch_id=batch_id)))
        id_bytes = sum(len(b',"batch_id":""') + len(f"bench{db}-{k}") for k in range(len(payloads))) if batch_ids else 0
        random.Random(1).shuffle(payloads)
        pub = Publisher(broker)
        topic = mqtt.readings_topic(site, "gw")
        t0 = time.perf_counter()
        for p in payloads:
            pub.publish(topic, p)
        while pub.acked < len(payloads):
            time.sleep(0.005)
        t_pub = time.perf_counter() - t0
        t_done = wait_count(influx, db, len(readings))
        pub.close()
        if batch_ids:
            tap.wait_ids(len(payloads))
        return MqttRun(t_done - t0, t_pub, len(payloads), id_bytes, tap.wire_bytes, tap.messages)
    finally:
        tap.close()
        backend.stop()


def latency_run(broker: MosquittoService, influx: InfluxService, tmp: Path, meters: int, seconds: int) -> list[float]:
    db = "bench_latency"
    backend = Backend(broker, influx, db, tmp)
    pub = Publisher(broker, inflight=1000)
    sent: dict[tuple[str, int], float] = {}
    seen: dict[tuple[str, int], float] = {}
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=influx.url, timeout=10) as http:
            while not stop.is_set() or len(seen) < len(sent):
                q = f'SELECT seq, device FROM "{db}"."raw"."readings" WHERE time > now() - 5s'
                body = http.get("/query", params={"q": q, "db": db, "epoch": "ms"}).json()
                now = time.perf_counter()
                for res in body.get("results", []):
                    for s in res.get("series", []):
                        for _, seq, dev in s["values"]:
                            seen.setdefault((dev, seq), now)
                if stop.is_set() and time.perf_counter() > deadline_after:
                    return
                time.sleep(0.02)

    deadline_after = float("inf")
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        start = time.perf_counter()
        for sec in range(seconds):
            tick = start + sec
            while time.perf_counter() < tick:
                time.sleep(0.001)
            for m in range(meters):
                dev = f"{m:016x}"
                now_ms = int(time.time() * 1000)
                r = Reading(device=dev, boot=1, seq=sec, ts=now_ms, vrms=127.0, irms=1.0, p=127.0, s=130.0,
                            pf=0.97, freq=60.0, energy_mwh=sec * 35)
                payload = mqtt.json_encoder.encode(ReadingBatch(site="lat", gateway=f"gw{m // 10}",
                                                                     readings=[r]))
                sent[(dev, sec)] = time.perf_counter()
                pub.publish(mqtt.readings_topic("lat", f"gw{m // 10}"), payload)
        deadline_after = time.perf_counter() + 10
        stop.set()
        poller.join(20)
    finally:
        pub.close()
        backend.stop()
    return sorted(seen[k] - sent[k] for k in sent if k in seen)


def rollup_lines(meters: int, days: int, minute_meters: int, start_ms: int) -> tuple[list[str], list[str]]:
    """Points of the r1m (for ``minute_meters``) and r1h (all meters) schema for ``days`` of 1 s data, the
    site's energy series (r1m: 15 min, r1h: 1 h, all meters) and the devices' daily series (r1h ``energy_d``,
    local days)."""
    rnd = random.Random(7)
    m1: list[str] = []
    h1: list[str] = []
    site_q: dict[int, float] = {}
    tz = ZoneInfo("America/Sao_Paulo")

    def fields(n: int, p: float, e0: int, e1: int) -> str:
        v = 127.0 + rnd.random()
        return (f"n={n}i,energy_first={e0}i,energy_last={e1}i,energy_min={e0}i,energy_max={e1}i,boot_min=1i,"
                f"boot_max=1i,vrms_mean={v},vrms_min={v - 1},vrms_max={v + 1},irms_mean={p / v},irms_max={p / v},"
                f"p_mean={p},p_min={p * 0.9},p_max={p * 1.1},s_mean={p * 1.05},s_max={p * 1.2},pf_mean=0.95,"
                f"pf_min=0.9,freq_mean=60.0,vrms_sum={v * n},irms_sum={p / v * n},p_sum={p * n},"
                f"s_sum={p * 1.05 * n},pf_sum={0.95 * n},freq_sum={60.0 * n}")

    for m in range(meters):
        tags = f"readings,device={m:016x},gateway=gw{m // 10},site=bench"
        energy = 1_000_000
        daily: dict[int, int] = {}
        for h in range(days * 24):
            p = 300 + 200 * rnd.random()
            hour_ms = start_ms + h * 3_600_000
            e_end = energy + int(p * 1000)  # mWh in an hour at p W
            for q in range(4):
                site_q[hour_ms + q * 900_000] = site_q.get(hour_ms + q * 900_000, 0.0) + (e_end - energy) / 4
            h1.append(f"{tags} {fields(3600, p, energy, e_end)} {hour_ms}")
            local = dt.datetime.fromtimestamp(hour_ms / 1000, tz).replace(hour=0, minute=0, second=0)
            day_ms = int(local.timestamp() * 1000)
            daily[day_ms] = daily.get(day_ms, 0) + e_end - energy
            if m < minute_meters:
                for mi in range(60):
                    e0 = energy + int(p * 1000 * mi / 60)
                    m1.append(f"{tags} {fields(60, p, e0, e0 + int(p * 1000 / 60))} {hour_ms + mi * 60_000}")
            energy = e_end
        h1.extend(f"energy_d,device={m:016x},gateway=gw{m // 10},site=bench mwh={float(e)},est=0i,resets=0i,"
                  f"spikes=0i,jumps=0i {t}" for t, e in sorted(daily.items()))
    site = "site_energy,site=bench"
    for t, mwh in sorted(site_q.items()):
        m1.append(f"{site} mwh={mwh},est=0i,resets=0i,spikes=0i,jumps=0i,devices={meters}i {t}")
        if t % 3_600_000 == 0:
            hour = sum(site_q[t + q * 900_000] for q in range(4))
            h1.append(f"{site} mwh={hour},est=0i,resets=0i,spikes=0i,jumps=0i,devices={meters}i {t}")
    return m1, h1


async def analytics_run(influx: InfluxService, meters: int, days: int, minute_meters: int,
                        samples: int) -> dict[str, list[float]]:
    db = "bench_analytics"
    start_ms = (int(time.time() * 1000) // DAY_MS - days - 1) * DAY_MS
    end_ms = start_ms + days * DAY_MS
    async with InfluxClient(influx.url, timeout=120) as client:
        from backend.settings import Settings
        from backend.store.layout import ensure_schema

        settings = Settings(influx_db=db, influx_url=influx.url)
        await ensure_schema(client, settings)
        m1, h1 = rollup_lines(meters, days, minute_meters, start_ms)
        t0 = time.perf_counter()
        for rp, lines in (("r1m", m1), ("r1h", h1)):
            for i in range(0, len(lines), 5000):
                await client.write(lines[i:i + 5000], db, rp=rp, precision="ms")
        print(f"   (rollup data: {len(m1):,} r1m + {len(h1):,} r1h points written in {time.perf_counter() - t0:.1f} s)")
        params = {"s": start_ms * 1_000_000, "e": end_ms * 1_000_000}
        queries = {
            "kWh per day, 1 meter, month (r1h)":
                f'SELECT first(energy_first), last(energy_last) FROM "{db}"."r1h"."readings" '
                "WHERE device = $d AND time >= $s AND time < $e GROUP BY time(1d) fill(none)",
            "kWh per day per meter, 100 meters, month (r1h)":
                f'SELECT first(energy_first), last(energy_last) FROM "{db}"."r1h"."readings" '
                "WHERE time >= $s AND time < $e GROUP BY time(1d), device fill(none)",
            "kWh per day per meter, 100 meters, month (device series r1h.energy_d)":
                f'SELECT mwh FROM "{db}"."r1h"."energy_d" WHERE site = \'bench\' AND time >= $s AND time < $e '
                "GROUP BY device",
            "hourly profile, 1 meter, month (r1h)":
                f'SELECT first(energy_first), last(energy_last), max(p_max) FROM "{db}"."r1h"."readings" '
                "WHERE device = $d AND time >= $s AND time < $e GROUP BY time(1h) fill(none)",
            "kWh per hour per meter, 100 meters, month (r1h)":
                f'SELECT first(energy_first), last(energy_last) FROM "{db}"."r1h"."readings" '
                "WHERE time >= $s AND time < $e GROUP BY time(1h), device fill(none)",
            "site mean power per hour, 100 meters, month (r1h)":
                f'SELECT sum(p_sum) / sum(n) FROM "{db}"."r1h"."readings" '
                "WHERE site = 'bench' AND time >= $s AND time < $e GROUP BY time(1h) fill(none)",
            "kWh per hour, site, month (site series r1h)":
                f'SELECT mwh FROM "{db}"."r1h"."site_energy" WHERE site = \'bench\' AND time >= $s AND time < $e',
            "kWh per day, site, month (site series r1h, local days)":
                f'SELECT sum(mwh) FROM "{db}"."r1h"."site_energy" WHERE site = \'bench\' AND time >= $s '
                "AND time < $e GROUP BY time(1d) fill(none) tz('America/Sao_Paulo')",
            "site mean power per hour, month (site series r1h)":
                f'SELECT mwh / 1000 FROM "{db}"."r1h"."site_energy" WHERE site = \'bench\' AND time >= $s '
                "AND time < $e",
            "site 15-min demand, month (site series r1m)":
                f'SELECT mwh * 4 / 1000 FROM "{db}"."r1m"."site_energy" WHERE site = \'bench\' AND est = 0 '
                "AND time >= $s AND time < $e",
            f"15-min demand, 1 meter, {days} days (r1m)":
                f'SELECT sum(p_sum) / sum(n) FROM "{db}"."r1m"."readings" '
                "WHERE device = $d AND time >= $s AND time < $e GROUP BY time(15m) fill(none)",
        }
        out: dict[str, list[float]] = {}
        rnd = random.Random(3)
        for name, q in queries.items():
            times = []
            for _ in range(samples):
                dev = f"{rnd.randrange(minute_meters if 'r1m' in name else meters):016x}"
                t = time.perf_counter()
                await client.query(q, db=db, params={**params, "d": dev})
                times.append(time.perf_counter() - t)
            out[name] = sorted(times)
        return out


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller data (about a minute)")
    ap.add_argument("--only", choices=["ingest", "latency", "analytics"], help="1.-3., 4. or 5. alone")
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio is below its floor (FLOORS)")
    args = ap.parse_args()
    ratios: dict[str, float] = {}
    n = 100_000 if args.quick else 400_000
    n_single = 10_000 if args.quick else 40_000
    meters, lat_seconds = 1000, (10 if args.quick else 30)
    a_days, a_minute_meters = (30, 5) if args.quick else (30, 20)

    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with MosquittoService(tmp / "mosquitto") as broker, InfluxService(tmp / "influx") as influx:
            if args.only in (None, "ingest"):
                ratios.update(ingest_figures(broker, influx, tmp, n, n_single))
            if args.only in (None, "latency"):
                lat = latency_run(broker, influx, tmp, meters, lat_seconds)
                expected = meters * lat_seconds
                ratios["latency: seen / sent"] = len(lat) / expected
                print(f"4. latency publish -> queryable, {meters} meters x 1 reading/s for {lat_seconds} s "
                      f"({len(lat):,}/{expected:,} seen): p50 {1000 * pct(lat, 0.5):.0f} ms, "
                      f"p99 {1000 * pct(lat, 0.99):.0f} ms, max {1000 * lat[-1]:.0f} ms (target p99 < 1000 ms; "
                      "includes up to ~20 ms polling granularity)")
            if args.only in (None, "analytics"):
                res = asyncio.run(analytics_run(influx, 100, a_days, a_minute_meters, 30 if args.quick else 60))
                print(f"5. analytics queries through the rollups ({a_days} days, 100 meters; r1m for "
                      f"{a_minute_meters} meters):")
                for name, times in res.items():
                    print(f"   {name}: p50 {1000 * statistics.median(times):.1f} ms, "
                          f"p95 {1000 * pct(times, 0.95):.1f} ms (target p95 < 100 ms)")
    if args.check:
        failed = [name for name, value in ratios.items() if value < FLOORS[name]]
        for name, value in ratios.items():
            print(f"check: {name} {value:.3f} {'<' if name in failed else '>='} floor {FLOORS[name]}")
        sys.exit(1 if failed else 0)


def ingest_figures(broker: MosquittoService, influx: InfluxService, tmp: Path, n: int,
                   n_single: int) -> dict[str, float]:
    """1. to 3.: raw InfluxDB, MQTT batched without and with receipts, one reading per message; returns the
    ratios ``--check`` compares with ``FLOORS``."""
    start_ms = int(time.time() * 1000) - 10 * DAY_MS
    readings = make_readings(n, 100, start_ms)
    lines = [reading_line("bench", "gw", r) for r in readings]
    raw_s = asyncio.run(raw_ingest(influx, "bench_raw", lines))
    raw_rate = n / raw_s
    print(f"1. raw InfluxDB line protocol: {n:,} readings in {raw_s:.2f} s = {raw_rate:,.0f} readings/s")

    plain = mqtt_run(broker, influx, tmp, "bench_batched", readings, mqtt.MAX_BATCH)
    with_ids = mqtt_run(broker, influx, tmp, "bench_receipts", readings, mqtt.MAX_BATCH, batch_ids=True)
    # the machine's load drifts: measure the raw limit again right after and compare with the mean
    raw_rate_after = n / asyncio.run(raw_ingest(influx, "bench_raw_after", lines))
    raw_mean = (raw_rate + raw_rate_after) / 2
    rate, rate_ids = n / plain.seconds, n / with_ids.seconds
    print(f"2. MQTT batched ({mqtt.MAX_BATCH}/msg, QoS 1, ack after write), no batch ids (an older gateway): {n:,} "
          f"readings queryable in {plain.seconds:.2f} s = {rate:,.0f} readings/s = {100 * rate / raw_mean:.0f} % of "
          f"raw (raw measured again after: {raw_rate_after:,.0f}/s, mean {raw_mean:,.0f}/s; target >= 50 %; "
          f"publisher done after {plain.publish_s:.2f} s)")
    print(f"   with batch ids, receipts published: {with_ids.seconds:.2f} s = {rate_ids:,.0f} readings/s = "
          f"{100 * rate_ids / raw_mean:.0f} % of raw (target >= 50 %), {rate_ids / rate:.2f} of the rate without; "
          f"{with_ids.receipts} receipts for {with_ids.messages} batches; MQTT bytes per reading: uplink batch_id "
          f"{with_ids.id_bytes / n:.3f}, downlink receipts {with_ids.receipt_bytes / n:.3f}")

    ratios = {"batched / raw": rate / raw_mean, "batched with receipts / without": rate_ids / rate}
    single = make_readings(n_single, 100, start_ms)
    for batch_ids in (False, True):
        one = mqtt_run(broker, influx, tmp, f"bench_single_{int(batch_ids)}", single, 1, batch_ids=batch_ids)
        rate1 = n_single / one.seconds
        how = (f"each with a batch id: {one.receipts} receipts for {one.messages} batches, MQTT bytes per reading: "
               f"uplink batch_id {one.id_bytes / n_single:.1f}, downlink receipts {one.receipt_bytes / n_single:.1f}"
               if batch_ids else "no batch ids")  # fmt: skip
        print(f"3. MQTT one reading per message, {how}: {n_single:,} readings queryable in {one.seconds:.2f} s = "
              f"{rate1:,.0f} readings/s = {100 * rate1 / raw_mean:.1f} % of raw "
              f"(publisher alone: {n_single / one.publish_s:,.0f} msg/s)")
        ratios["one per message / raw"] = min(ratios.get("one per message / raw", 1.0), rate1 / raw_mean)
    return ratios


if __name__ == "__main__":
    main()
