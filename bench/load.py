"""Load run: N real gateways x M simulated meters at 1 Hz through Mosquitto into one, then two backend replicas.

The figures docs/scaling.md turns into a deployment for 100 000 meters. Everything is the real product: every
meter is a simulated AICSS meter on a pty (sim.runner.MeterRunner, one runner thread per gateway, speaking the
serial protocol), read by a real ``python -m gateway run`` subprocess with its SQLite queue and end-to-end
receipts, published to Mosquitto with the shipped mosquitto.conf, taken by ``python -m backend`` replicas
sharing the uplink and written to InfluxDB 1.x. Meters on ptys, not the simulator's in-process shortcut: the
per-reading cost of the serial path is part of what a gateway costs, and a few hundred ptys at 1 Hz are light
(the runner threads sleep between reports).

The backends run with the shipped per-gateway policy (message budget, device book, claims); only the claim limits
are raised to M meters per gateway, because a load run's gateways all appear within the same hour.

Printed, for one replica and for two (the most this 2-core machine runs beside everything else):

- sustained readings/s stored (InfluxDB ``count``) against the offered N x M / period;
- latency publish -> queryable, p50 / p99 (publish: a plain subscriber's arrival time, i.e. the broker's
  forward; queryable: the first poll of ``last(seq)`` per meter that shows it) and meter -> queryable (from the
  reading's own timestamp: serial link, gateway queue and batching included);
- CPU-seconds per 1 000 readings and peak RSS for each process: broker, each backend, InfluxDB, each gateway
  (and the bench process, which runs the meters, the tap and the poller: not a cost of CDS), over the second
  half of the window (the first half measures latency; its poller's queries would count as InfluxDB's cost);
  for the servers also their idle CPU, measured before the gateways start, and the marginal CPU-seconds per
  1 000 readings above it;

and, in the same run, the raw limits the per-reading costs are compared with: InfluxDB's bulk line-protocol ingest
(5 000-line requests, 2 in flight) and Mosquitto's QoS 1 PUBACK rate for one-reading payloads, each with its own
CPU-seconds per 1 000 readings.

    .venv/bin/python bench/load.py --quick            # 4 gateways x 16 meters, 20 s per phase (under 2 minutes)
    .venv/bin/python bench/load.py                    # 8 gateways x 32 meters, 60 s per phase
    .venv/bin/python bench/load.py --check            # exit 1 when a floor below is not met

``--check`` floors (chosen from runs on the 2-core development machine under its usual shared load, with margin):
stored / offered >= 0.95 in every phase (at 1 Hz every reading should be stored within the window: a lower ratio
means a stage is falling behind), and the two-replica run's throughput >= 0.9 of the one-replica run's (a second
replica must not cost throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ingest import Backend, Publisher, make_readings, raw_ingest  # noqa: E402  (bench/ingest.py, same folder)

from backend.store.lineprotocol import reading_line  # noqa: E402
from devstack.influxdb import InfluxService  # noqa: E402
from devstack.mosquitto import MosquittoService  # noqa: E402
from devstack.processes import free_port  # noqa: E402
from protocol import mqtt  # noqa: E402
from sim.runner import MeterRunner  # noqa: E402

SITE = "load"
CLK = os.sysconf("SC_CLK_TCK")
FLOOR_STORED = 0.95
FLOOR_TWO_REPLICAS = 0.9


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Gateway:
    """``python -m gateway run`` with its meters on ptys, as a field installation runs it."""

    def __init__(self, workdir: Path, broker: MosquittoService, phase: str, index: int, meters: int,
                 period_ms: int) -> None:
        self.name = f"gw-{index}"
        # new meters, a new queue and a new site per phase: a gateway remembers every (device, boot, seq) it took,
        # so meters that started again from seq 1 would never be sent, and the backends' device book (kept across
        # phases) would count the earlier phase's meters against the gateway's limit
        links = workdir / f"links-{phase}-{self.name}"
        self.runner = MeterRunner(speed=1.0, link_dir=links, seed=f"load-{phase}-{index}")
        for _ in range(meters):
            self.runner.add_meter(report_period_ms=period_ms)
        self.runner.start()
        conf = workdir / f"{phase}-{self.name}.toml"
        conf.write_text(
            f'site = "{phase}"\ngateway = "{self.name}"\nlog_level = "WARNING"\n'
            f'[serial]\nports = ["{links}/*"]\n'
            f'[queue]\npath = "{workdir / phase}-{self.name}.sqlite3"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nreconnect_min_s = 0.2\n'
            f'[status]\nbind = "127.0.0.1"\nport = {free_port()}\n'
        )
        self.log = open(workdir / f"{phase}-{self.name}.log", "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "gateway", "run", "--config", str(conf)]
        if shutil.which("setpriv"):  # dies with the bench even if it is killed
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.runner.stop()
        self.log.close()


class Tap:
    """A plain (not shared) subscriber to every gateway's readings: when each (device, seq) passed the broker."""

    def __init__(self, broker: MosquittoService) -> None:
        self.published: dict[tuple[str, int], tuple[float, int]] = {}
        """(device, seq) -> (perf_counter at arrival, the reading's own ts in ms)."""
        self.messages = self.readings = 0
        ready = threading.Event()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"load-tap-{os.getpid()}", protocol=paho.MQTTv5)
        self.c.on_connect = lambda c, *a: c.subscribe("cds/v1/+/+/up/readings", qos=0)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        readings = mqtt.batch_decoder.decode(msg.payload).readings
        self.messages += 1
        self.readings += len(readings)
        for r in readings:
            self.published.setdefault((r.device, r.seq), (now, r.ts))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Poller(threading.Thread):
    """Polls ``last(seq)`` per meter: one row per meter per poll, so the poll costs InfluxDB little; a meter's
    readings are written in order, so seeing seq s makes every earlier seq of that boot queryable too."""

    def __init__(self, influx: InfluxService, db: str, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.influx, self.db, self.every_s = influx, db, every_s
        self.visible: list[tuple[float, str, int]] = []
        """(perf_counter, device, highest seq seen), one entry per change."""
        self.stop_event = threading.Event()

    def run(self) -> None:
        last: dict[str, int] = {}
        q = f'SELECT last(seq) FROM "{self.db}"."raw"."readings" WHERE time > now() - 30s GROUP BY device'
        with httpx.Client(base_url=self.influx.url, timeout=10) as http:
            while not self.stop_event.wait(self.every_s):
                try:
                    body = http.get("/query", params={"q": q, "db": self.db, "epoch": "ms"}).json()
                except httpx.HTTPError:
                    continue
                now = time.perf_counter()
                for res in body.get("results", []):
                    for s in res.get("series", []):
                        dev, seq = s["tags"]["device"], int(s["values"][0][1])
                        if seq > last.get(dev, -1):
                            last[dev] = seq
                            self.visible.append((now, dev, seq))


def latencies(tap: Tap, poller: Poller, t0: float, t1: float) -> tuple[list[float], list[float]]:
    """(publish -> queryable, meter -> queryable) in seconds for readings published within [t0, t1)."""
    seen: dict[str, list[tuple[float, int]]] = {}
    for at, dev, seq in poller.visible:
        seen.setdefault(dev, []).append((at, seq))
    pub, meter = [], []
    wall_minus_perf = time.time() - time.perf_counter()
    for (dev, seq), (at_pub, ts) in tap.published.items():
        if not t0 <= at_pub < t1:
            continue
        first = next((at for at, s in seen.get(dev, []) if s >= seq), None)
        if first is not None:
            pub.append(first - at_pub)
            meter.append(first + wall_minus_perf - ts / 1000)
    return sorted(pub), sorted(meter)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def count(influx: InfluxService, db: str) -> int:
    rows = influx.rows(f'SELECT count(seq) FROM "{db}"."raw"."readings"', db=db)
    return int(rows[0]["count"]) if rows else 0


class Phase(NamedTuple):
    replicas: int
    offered_per_s: float
    stored: int
    seconds: float
    """The whole window (both halves, 3 s between them included)."""
    cost_stored: int
    cost_seconds: float
    """The second half, where the CPU and RSS figures are taken."""
    lat_pub: list[float]
    lat_meter: list[float]
    cpu: dict[str, float]
    rss: dict[str, float]
    idle: dict[str, float]
    """CPU-seconds per second of the servers before any gateway connected."""
    per_message: float
    """Readings per MQTT message the gateways published: the backend's and InfluxDB's costs are per message and
    per write far more than per reading."""

    @property
    def rate(self) -> float:
        return self.stored / self.seconds


def run_phase(tmp: Path, broker: MosquittoService, influx: InfluxService, replicas: int, gateways: int, meters: int,
              period_ms: int, seconds: float) -> Phase:
    db = f"load_r{replicas}"
    policy = {"BACKEND_INGEST_FLUSH_MS": "50", "BACKEND_INGEST_GATEWAY_MESSAGES_PER_S": "50",
              "BACKEND_INGEST_GATEWAY_BURST": "500",
              "BACKEND_PROVISIONING_MAX_DEVICES_PER_GATEWAY": str(max(64, meters)),
              "BACKEND_PROVISIONING_NEW_DEVICES_PER_HOUR": str(max(16, meters)),
              "BACKEND_MQTT_SHARE_GROUP": "load"}  # fmt: skip
    backends = []
    for i in range(replicas):
        # The same client ids and share group in every phase: a replica resumes the persistent session of the
        # previous phase's replica of its rank, so no stale session stays in the group for the broker to feed.
        extra = {**policy, "BACKEND_MQTT_CLIENT_ID": f"load-{i}"}
        if i:  # one rollup worker, as in compose
            extra["BACKEND_ROLLUP_ENABLED"] = "false"
        backends.append(Backend(broker, influx, db, tmp, extra))
    # Idle cost first, without gateways: what broker, InfluxDB and the replicas burn with no readings at all, so
    # a per-reading cost at this low rate can be split into a fixed part and a marginal one.
    servers = {"broker": broker.pid or 0, "influxdb": influx.pid or 0}
    servers.update({f"backend-{i + 1}": b.proc.pid for i, b in enumerate(backends)})
    time.sleep(2.0)
    idle0, idle_t0 = {k: cpu_s(p) for k, p in servers.items()}, time.perf_counter()
    time.sleep(5.0)
    idle_s = time.perf_counter() - idle_t0
    idle = {k: (cpu_s(p) - idle0[k]) / idle_s for k, p in servers.items()}
    tap = Tap(broker)
    gws = [Gateway(tmp, broker, db, g, meters, period_ms) for g in range(gateways)]
    poller = Poller(influx, db)
    poller.start()
    procs = {**servers, "bench (meters, tap, poll)": os.getpid()}
    procs.update({g.name: g.proc.pid for g in gws})
    try:
        time.sleep(6.0)  # warm-up window: imports, ports opened, meters claimed, first batches through
        # First half: latency, with the poller querying InfluxDB 10 times a second. Second half: costs, with the
        # poller stopped, so InfluxDB's CPU is the ingest's and not the bench's queries.
        n0, t0 = count(influx, db), time.perf_counter()
        time.sleep(seconds / 2)
        t_lat = time.perf_counter()
        time.sleep(3.0)  # the latency half's last readings become visible to the poller
        poller.stop_event.set()
        n_cost, t_cost = count(influx, db), time.perf_counter()
        cpu0 = {k: cpu_s(p) for k, p in procs.items()}
        peak: dict[str, float] = dict.fromkeys(procs, 0.0)
        while time.perf_counter() - t_cost < seconds / 2:
            for k, p in procs.items():
                peak[k] = max(peak[k], rss_mb(p))
            time.sleep(0.5)
        cpu1 = {k: cpu_s(p) for k, p in procs.items()}
        n1, t1 = count(influx, db), time.perf_counter()
    finally:
        poller.stop_event.set()
        for g in gws:
            g.stop()
        tap.close()
        for b in backends:
            b.stop()
    lat_pub, lat_meter = latencies(tap, poller, t0, t_lat)
    per_message = tap.readings / max(tap.messages, 1)
    offered = gateways * meters * 1000 / period_ms
    return Phase(replicas, offered, n1 - n0, t1 - t0, n1 - n_cost, t1 - t_cost, lat_pub, lat_meter,
                 {k: cpu1[k] - cpu0[k] for k in procs}, peak, idle, per_message)


def raw_limits(tmp: Path, broker: MosquittoService, influx: InfluxService, n: int) -> dict[str, tuple[float, float]]:
    """name -> (readings/s, CPU-seconds of the server per 1 000 readings)."""
    readings = make_readings(n, 100, int(time.time() * 1000) - 86_400_000)
    lines = [reading_line(SITE, "gw", r) for r in readings]
    c0 = cpu_s(influx.pid or 0)
    secs = asyncio.run(raw_ingest(influx, "load_raw", lines))
    influx_cpu = cpu_s(influx.pid or 0) - c0
    out = {"InfluxDB bulk line protocol (5 000 lines/request)": (n / secs, 1000 * influx_cpu / n)}

    m = n // 5
    payloads = [mqtt.json_encoder.encode(mqtt.ReadingBatch(site=SITE, gateway="raw", readings=[r]))
                for r in readings[:m]]
    pub = Publisher(broker, inflight=200)
    c0 = cpu_s(broker.pid or 0)
    t0 = time.perf_counter()
    for p in payloads:
        pub.publish(f"cds/v1/{SITE}/raw/up/readings", p)
    while pub.acked < m:
        time.sleep(0.005)
    secs = time.perf_counter() - t0
    out["Mosquitto QoS 1, one reading per message (PUBACK rate)"] = (m / secs, 1000 * (cpu_s(broker.pid or 0) - c0) / m)
    pub.close()
    return out


def report(phase: Phase) -> None:
    print(f"\n{phase.replicas} backend replica(s): offered {phase.offered_per_s:,.0f} readings/s; stored "
          f"{phase.stored:,} in {phase.seconds:.1f} s = {phase.rate:,.1f} readings/s "
          f"({phase.rate / phase.offered_per_s:.3f} of offered; readings queued during the warm-up can lift it "
          f"above 1); {phase.per_message:.1f} readings per MQTT message")
    print(f"   publish -> queryable: p50 {1000 * pct(phase.lat_pub, 0.5):.0f} ms, p99 "
          f"{1000 * pct(phase.lat_pub, 0.99):.0f} ms; meter -> queryable: p50 "
          f"{1000 * pct(phase.lat_meter, 0.5):.0f} ms, p99 {1000 * pct(phase.lat_meter, 0.99):.0f} ms "
          f"({len(phase.lat_pub):,} readings; polling every 100 ms)")
    stored = max(phase.cost_stored, 1)
    print(f"   costs over the last {phase.cost_seconds:.0f} s ({phase.cost_stored:,} readings, no polling):")
    print(f"   {'process':28} {'CPU s / 1000 readings':>22} {'CPU % of a core':>16} {'peak RSS MB':>12} "
          f"{'idle CPU %':>11} {'marginal CPU s / 1000':>22}")
    gw = [k for k in phase.cpu if k.startswith("gw-")]
    for k in phase.cpu:
        if k in gw[1:]:
            continue
        if k in gw:  # one line for all gateways: they are alike
            per = statistics.mean(phase.cpu[g] for g in gw)
            print(f"   {'gateway (mean of ' + str(len(gw)) + ')':28} {1000 * per * len(gw) / stored:>22.3f} "
                  f"{100 * per / phase.cost_seconds:>16.1f} {max(phase.rss[g] for g in gw):>12.1f}")
            continue
        line = (f"   {k:28} {1000 * phase.cpu[k] / stored:>22.3f} {100 * phase.cpu[k] / phase.cost_seconds:>16.1f} "
                f"{phase.rss[k]:>12.1f}")
        if k in phase.idle:
            marginal = phase.cpu[k] - phase.idle[k] * phase.cost_seconds
            line += f" {100 * phase.idle[k]:>11.1f} {1000 * marginal / stored:>22.3f}"
        print(line)
    cds = sum(v for k, v in phase.cpu.items() if not k.startswith("bench"))
    print(f"   all of CDS (broker + backends + InfluxDB + gateways): {1000 * cds / stored:.3f} CPU s per 1000 "
          "readings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 gateways x 16 meters, 20 s per phase")
    ap.add_argument("--gateways", type=int)
    ap.add_argument("--meters", type=int, help="meters per gateway")
    ap.add_argument("--period-ms", type=int, default=1000, help="each meter's report period (1000: 1 Hz)")
    ap.add_argument("--seconds", type=float, help="measured window per phase")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--check", action="store_true", help="exit 1 when a floor of the docstring is not met")
    ap.add_argument("--workdir", type=Path, help="keep the servers' data and every process's log here")
    args = ap.parse_args()
    gateways = args.gateways or (4 if args.quick else 8)
    meters = args.meters or (16 if args.quick else 32)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    print(f"load run: {gateways} gateways x {meters} meters, one reading per {args.period_ms} ms each; "
          f"{os.cpu_count()} cores")
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cds-load-") as tmpdir:
        tmp = args.workdir or Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        with MosquittoService(tmp / "mosquitto") as broker, InfluxService(tmp / "influx") as influx:
            print("raw limits, same run:")
            for name, (rate, cpu) in raw_limits(tmp, broker, influx, 20_000 if args.quick else 100_000).items():
                print(f"   {name}: {rate:,.0f} readings/s, {cpu:.3f} CPU s per 1000 readings")
            phases = []
            for replicas in args.replicas:
                phase = run_phase(tmp, broker, influx, replicas, gateways, meters, args.period_ms, seconds)
                report(phase)
                phases.append(phase)
                if phase.rate / phase.offered_per_s < FLOOR_STORED:
                    failures.append(f"{replicas} replica(s): stored/offered {phase.rate / phase.offered_per_s:.3f} "
                                    f"< {FLOOR_STORED}")
    if len(phases) >= 2 and phases[1].rate / phases[0].rate < FLOOR_TWO_REPLICAS:
        failures.append(f"two replicas / one: {phases[1].rate / phases[0].rate:.3f} < {FLOOR_TWO_REPLICAS}")
    if args.check:
        for f in failures:
            print(f"CHECK FAILED: {f}")
        print("check: " + ("FAILED" if failures else "all floors met"))
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
