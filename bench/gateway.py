"""Gateway benchmarks; prints figures and ratios against the raw limit measured in the same run.

    .venv/bin/python bench/gateway.py            # full sizes (1,000,000-reading drain, 20 s sustained)
    .venv/bin/python bench/gateway.py --quick    # smaller sizes, for a smoke run

1. sustained: 16 simulated meters (ptys) at 1 reading/s into a real ``python -m gateway run`` subprocess and a real
   Mosquitto: the gateway's CPU % (of one core) and peak RSS.
2. drain: a queue file pre-filled with N readings is forwarded by the gateway subprocess to Mosquitto while a
   subscriber consumes them: readings/s, against raw paho publishing of the same batch payloads (same QoS 1,
   same in-flight window, same subscriber) in the same run.
3. queue: committed readings/s through DurableQueue.commit (synchronous=FULL, the shipped default, and NORMAL) at
   several group-commit sizes, against plain SQLite inserts (default rollback journal, one transaction) of the
   same rows.
4. receipts: the cost of end-to-end receipts on the gateway. The drain of 2. and the sustained load of 1. again,
   once with receipts off (``receipt_timeout_s = 0``: PUBACK + replay window, as before receipts) and once with
   receipts on, answered by a subscriber that plays the backend's part (it confirms every batch id it receives,
   coalesced like the backend, per 20 ms), so the gateway keeps every reading until its receipt and deletes it
   then. Prints both rates (and CPU) and their ratio, and the MQTT bytes receipts add per reading: the
   ``batch_id`` field uplink and the receipt messages downlink (payload, topic and packet header).

``--check`` exits 1 when a ratio of the parts that ran drops below its floor in ``FLOORS``. The queue's ratios
are left out: they follow the disk's fsync latency, which a shared machine does not hold still.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devstack.mosquitto import MosquittoService  # noqa: E402
from devstack.processes import free_port  # noqa: E402
from gateway.link import Progress  # noqa: E402
from gateway.pump import batch_payload  # noqa: E402
from gateway.queue import DurableQueue, Row  # noqa: E402
from protocol import mqtt  # noqa: E402
from sim.runner import MeterRunner  # noqa: E402

SITE, GW = "bench", "gw-1"

FLOORS = {
    "sustained: delivered / produced": 0.9,  # 1.: about 1.0 (a reading in flight at each end of the window)
    "drain: gateway / raw paho": 0.15,  # 2.: 0.3-0.5 (docs/gateway.md)
    "receipts: drain with / without": 0.7,  # 4.: 0.98-1.22 (docs/gateway.md)
}
"""``--check``: ratio name -> the lowest value that passes (from runs on the 2-core development machine, with
margin for a loaded one)."""
CLK = os.sysconf("SC_CLK_TCK")


def make_rows(n: int, devices: int = 8, start_ms: int | None = None) -> list[Row]:
    start = start_ms or int(time.time() * 1000) - n
    rows = []
    for i in range(n):
        dev = f"a1c55000000000{i % devices:02x}"
        seq = i // devices + 1
        r = mqtt.Reading(
            device=dev, boot=1, seq=seq, ts=start + i, vrms=127.123, irms=3.456, p=401.2, s=439.3, pf=0.913,
            freq=60.002, energy_mwh=123_456_789 + i, flags=0,
        )  # fmt: skip
        rows.append(Row(dev, 1, seq, start + i, mqtt.json_encoder.encode(r)))
    return rows


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_config(workdir: Path, broker: MosquittoService, ports: str, queue: Path, receipt_timeout_s: float = 60.0,
                 **mqtt_extra: object) -> Path:
    extra = "".join(f"{k} = {v!r}\n" for k, v in mqtt_extra.items())
    conf = workdir / f"gateway-{queue.stem}.toml"
    conf.write_text(
        f'site = "{SITE}"\ngateway = "{GW}"\nlog_level = "WARNING"\n'
        f'[serial]\nports = ["{ports}"]\nrescan_s = 0.5\n'
        f'[queue]\npath = "{queue}"\nmax_rows = 20000000\nmax_bytes = 10000000000\n'
        f'receipt_timeout_s = {receipt_timeout_s}\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nreconnect_min_s = 0.2\n{extra}'
        f'[status]\nbind = "127.0.0.1"\nport = {free_port()}\n'
    )
    return conf


class Counter:
    """A subscriber that decodes every batch (like the backend would) and counts readings."""

    def __init__(self, broker: MosquittoService, topic: str) -> None:
        self.n = 0
        self.first = 0.0
        self.last = 0.0
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}-{time.time()}",
                                  protocol=paho.MQTTv5)  # fmt: skip
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        k = len(mqtt.batch_decoder.decode(msg.payload).readings)
        now = time.perf_counter()
        if not self.n:
            self.first = now
        self.n += k
        self.last = now

    def wait(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.n < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.n >= n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ReceiptEcho(Counter):
    """A Counter that also answers as the backend does: every batch id it receives is confirmed in a Receipt on the
    gateway's receipts topic, ids coalesced per ``every_s``. Counts the bytes both ways."""

    def __init__(self, broker: MosquittoService, topic: str, every_s: float = 0.02) -> None:
        self.ids: list[str] = []
        self.id_bytes = 0
        self.receipt_bytes = 0
        self.receipts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        super().__init__(broker, topic)
        self._thread = threading.Thread(target=self._answer, args=(every_s,), daemon=True)
        self._thread.start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        batch = mqtt.batch_decoder.decode(msg.payload)
        if batch.batch_id:
            with self._lock:
                self.ids.append(batch.batch_id)
                self.id_bytes += len(b',"batch_id":""') + len(batch.batch_id)
        super()._on_message(_c, _u, msg)

    def _answer(self, every_s: float) -> None:
        topic = mqtt.receipts_topic(SITE, GW)
        while not self._stop.wait(every_s):
            with self._lock:
                ids, self.ids = self.ids, []
            for i in range(0, len(ids), mqtt.MAX_RECEIPT_IDS):
                payload = mqtt.json_encoder.encode(mqtt.Receipt(stored=ids[i : i + mqtt.MAX_RECEIPT_IDS]))
                self.client.publish(topic, payload, qos=1)
                # PUBLISH on the wire: fixed header (2-4 bytes), topic length + topic, packet id, properties length
                self.receipt_bytes += len(payload) + len(topic) + 2 + 2 + 1 + (2 if len(payload) < 16_000 else 3)
                self.receipts += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        super().close()


def run_sustained(tmp: Path, broker: MosquittoService, meters: int, seconds: float, receipts: bool) -> Sustained:
    """16 meters into a gateway subprocess; receipts answered by a :class:`ReceiptEcho` when ``receipts``."""
    name = "with-receipts" if receipts else "no-receipts"
    with MeterRunner(speed=1.0, link_dir=tmp / f"links-{name}", seed="bench") as runner:
        for _ in range(meters):
            runner.add_meter(report_period_ms=1000)
        conf = write_config(tmp, broker, str(tmp / f"links-{name}" / "*"), tmp / f"sustained-{name}.sqlite3",
                            receipt_timeout_s=60.0 if receipts else 0.0)  # fmt: skip
        topic = mqtt.readings_topic(SITE, GW)
        sub = ReceiptEcho(broker, topic) if receipts else Counter(broker, topic)
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(conf)], cwd=REPO)
        try:
            time.sleep(3.0)  # warm-up: imports, ports opened, first readings (not synchronisation: a warm-up window)
            n0, cpu0, t0 = sub.n, proc_cpu_s(proc.pid), time.monotonic()
            rss = 0.0
            while time.monotonic() - t0 < seconds:
                rss = max(rss, proc_rss_mb(proc.pid))
                time.sleep(0.25)
            cpu1, t1, n1 = proc_cpu_s(proc.pid), time.monotonic(), sub.n
        finally:
            proc.terminate()
            proc.wait(15)
            sub.close()
    extra = (sub.id_bytes + sub.receipt_bytes) / max(sub.n, 1) if isinstance(sub, ReceiptEcho) else 0.0
    return Sustained(n1 - n0, t1 - t0, 100 * (cpu1 - cpu0) / (t1 - t0), rss, extra)


class Sustained(NamedTuple):
    readings: int
    seconds: float
    cpu_pct: float
    rss_mb: float
    receipt_bytes_per_reading: float
    """Uplink batch ids and downlink receipts, per reading (0 without receipts)."""


def bench_sustained(tmp: Path, broker: MosquittoService, meters: int, seconds: float) -> float:
    """Returns readings delivered / produced by the meters in the window."""
    r = run_sustained(tmp, broker, meters, seconds, receipts=False)
    print(f"[sustained] {meters} meters x 1 reading/s for {r.seconds:.1f} s: {r.readings} readings delivered "
          f"({r.readings / r.seconds:.1f}/s); gateway CPU {r.cpu_pct:.1f} % of one core, "
          f"peak RSS {r.rss_mb:.1f} MB (target < 60 MB)")  # fmt: skip
    return r.readings / (meters * r.seconds)


def drain_once(tmp: Path, broker: MosquittoService, qpath: Path, n: int, inflight: int,
               receipts: bool) -> tuple[float, float, Counter]:
    """Forward a pre-filled queue file; returns (readings/s first to last message, gateway CPU s, subscriber)."""
    topic = mqtt.readings_topic(SITE, GW)
    sub = ReceiptEcho(broker, topic) if receipts else Counter(broker, topic)
    conf = write_config(tmp, broker, str(tmp / "no-meters" / "*"), qpath, receipt_timeout_s=60.0 if receipts else 0.0,
                        max_inflight=inflight)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(conf)], cwd=REPO)
    try:
        ok = sub.wait(n, 600)
        if receipts:  # the gateway keeps the readings until their receipts: wait until it has let go of them all
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and queue_left(qpath):
                time.sleep(0.2)
        cpu = proc_cpu_s(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        sub.close()
    if not ok:
        raise RuntimeError(f"only {sub.n} of {n} readings arrived")
    return n / (sub.last - sub.first), cpu, sub


def queue_left(qpath: Path) -> int:
    """Rows still in the queue file, unsent or awaiting a receipt."""
    db = sqlite3.connect(qpath, timeout=30)
    try:
        return int(db.execute("SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM replay)").fetchone()[0])
    finally:
        db.close()


def bench_drain(tmp: Path, broker: MosquittoService, n: int, inflight: int) -> tuple[Path, float]:
    """Returns a copy of the pre-filled queue file, for the receipts bench, and the ratio gateway / raw."""
    qpath = tmp / "drain.sqlite3"
    rows = make_rows(n)
    q = DurableQueue(str(qpath), max_rows=n + 1, max_bytes=10**10, synchronous="normal")
    t = time.perf_counter()
    for i in range(0, n, 50_000):
        q.commit(rows[i : i + 50_000])
    print(f"[drain] filled a queue with {n:,} readings in {time.perf_counter() - t:.1f} s")
    # the raw limit: the same batch payloads, published by paho alone, same QoS and window, same subscriber
    payloads = []
    b = q.fetch(0, mqtt.MAX_BATCH)
    while b is not None:
        payloads.append(batch_payload(SITE, GW, b.payloads, int(time.time() * 1000)))
        b = q.fetch(b.last_id, mqtt.MAX_BATCH)
    q.close()
    del rows
    spare = tmp / "drain-receipts.sqlite3"
    shutil.copy(qpath, spare)

    raw_topic = f"cds/v1/{SITE}/raw/up/readings"
    sub = Counter(broker, raw_topic)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-pub", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(inflight)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    t0 = time.perf_counter()
    infos = [pub.publish(raw_topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(120)
    sub.wait(n, 120)
    raw_s = max(time.perf_counter() - t0, sub.last - t0)
    pub.disconnect()
    pub.loop_stop()
    sub.close()
    raw_rate = n / raw_s

    t0 = time.perf_counter()
    rate, _, _ = drain_once(tmp, broker, qpath, n, inflight, receipts=False)
    t_all = time.perf_counter()
    print(f"[drain] {n:,} readings: gateway {rate:,.0f} readings/s (first to last message; "
          f"{n / (t_all - t0):,.0f}/s including process start and queue open) vs raw paho publish of the same "
          f"{len(payloads)} payloads {raw_rate:,.0f} readings/s: ratio {rate / raw_rate:.2f} "
          "(target >= 20,000/s)")  # fmt: skip
    return spare, rate / raw_rate


def bench_receipts(tmp: Path, broker: MosquittoService, spare: Path, n: int, inflight: int, meters: int,
                   seconds: float) -> float:
    """Receipts on vs off: drain throughput and CPU, sustained CPU, and the MQTT bytes they add per reading.
    Returns the drain's ratio with / without."""
    copy = tmp / "drain-receipts-off.sqlite3"
    shutil.copy(spare, copy)
    off_rate, off_cpu, _ = drain_once(tmp, broker, copy, n, inflight, receipts=False)
    on_rate, on_cpu, echo = drain_once(tmp, broker, spare, n, inflight, receipts=True)
    assert isinstance(echo, ReceiptEcho)
    print(f"[receipts] drain of {n:,} readings: {on_rate:,.0f} readings/s with receipts vs {off_rate:,.0f}/s "
          f"without (PUBACK + replay window): ratio {on_rate / off_rate:.2f}; gateway CPU {on_cpu:.1f} s vs "
          f"{off_cpu:.1f} s (including start-up)")  # fmt: skip
    print(f"[receipts] MQTT bytes per reading at {mqtt.MAX_BATCH} readings/message: uplink batch_id "
          f"{echo.id_bytes / n:.3f}, downlink receipts {echo.receipt_bytes / n:.3f} ({echo.receipts} receipt "
          "messages)")  # fmt: skip
    off = run_sustained(tmp, broker, meters, seconds, receipts=False)
    on = run_sustained(tmp, broker, meters, seconds, receipts=True)
    print(f"[receipts] {meters} meters x 1 reading/s: gateway CPU {on.cpu_pct:.2f} % of one core with receipts vs "
          f"{off.cpu_pct:.2f} % without; peak RSS {on.rss_mb:.1f} vs {off.rss_mb:.1f} MB; receipts add "
          f"{on.receipt_bytes_per_reading:.1f} MQTT bytes per reading (batch ids up, receipts down, answered every "
          "20 ms)")
    return on_rate / off_rate


def bench_queue(tmp: Path, n: int) -> None:
    rows = make_rows(n, devices=16)
    # plain SQLite: default rollback journal and synchronous, one transaction, a bare table
    plain = sqlite3.connect(str(tmp / "plain.sqlite3"))
    plain.execute("CREATE TABLE r (device TEXT, boot INTEGER, seq INTEGER, ts INTEGER, payload BLOB)")
    t = time.perf_counter()
    with plain:
        plain.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?)", rows)
    plain_rate = n / (time.perf_counter() - t)
    plain.close()
    print(f"[queue] plain SQLite inserts (one transaction, default journal): {plain_rate:,.0f} rows/s")
    for sync in ("full", "normal"):
        for group in (1, 16, 500):
            path = tmp / f"q-{sync}-{group}.sqlite3"
            q = DurableQueue(str(path), max_rows=n + 1, max_bytes=10**10, synchronous=sync)
            progress = {d: Progress(d, 1) for d in {r.device for r in rows}}
            total = min(n, 2000 * group)  # group=1 is one fsync per reading: keep its run short
            t = time.perf_counter()
            for i in range(0, total, group):
                chunk = rows[i : i + group]
                touched = []
                for r in chunk:
                    p = progress[r.device]
                    p.add(r.seq)
                    touched.append(p)
                q.commit(chunk, touched)
            rate = total / (time.perf_counter() - t)
            q.close()
            print(f"[queue] DurableQueue.commit synchronous={sync.upper():6} {group:>3} readings/commit: "
                  f"{rate:>9,.0f} readings/s  (ratio to plain {rate / plain_rate:.2f})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--only", choices=["sustained", "drain", "queue", "receipts"])
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio is below its floor (FLOORS)")
    args = ap.parse_args()
    ratios: dict[str, float] = {}
    n_drain = 100_000 if args.quick else 1_000_000
    seconds = 8.0 if args.quick else 20.0
    with tempfile.TemporaryDirectory(prefix="cds-bench-gw-") as d:
        tmp = Path(d)
        mode = "quick" if args.quick else "full"
        print(f"gateway bench ({mode}), {os.cpu_count()} cores, SQLite {sqlite3.sqlite_version}")
        if args.only in (None, "queue"):
            bench_queue(tmp, 50_000 if args.quick else 200_000)
        if args.only in (None, "sustained", "drain", "receipts"):
            with MosquittoService(tmp / "mosquitto") as broker:
                if args.only in (None, "sustained"):
                    ratios["sustained: delivered / produced"] = bench_sustained(tmp, broker, 16, seconds)
                if args.only in (None, "drain", "receipts"):
                    spare, ratios["drain: gateway / raw paho"] = bench_drain(tmp, broker, n_drain, inflight=16)
                    if args.only in (None, "receipts"):
                        ratios["receipts: drain with / without"] = bench_receipts(tmp, broker, spare, n_drain, 16,
                                                                                  16, seconds)  # fmt: skip
    if args.check:
        failed = [name for name, value in ratios.items() if value < FLOORS[name]]
        for name, value in ratios.items():
            print(f"check: {name} {value:.3f} {'<' if name in failed else '>='} floor {FLOORS[name]}")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
