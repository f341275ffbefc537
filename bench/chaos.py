"""The whole CDS chain under a seeded schedule of faults, then drained and reconciled reading by reading.

    .venv/bin/python bench/chaos.py --duration 150 --seed 1          # the short run (CI): under 4 minutes
    .venv/bin/python bench/chaos.py --duration 600 --seed 7 --json   # a longer run, machine-readable report

What runs (every part real, on free ports in a temporary folder): N meters — simulated ones (``sim``) and, when
the toolchain is installed, one running the real AVR firmware ELF in simavr — on pseudo-terminals; the gateway
(``python -m gateway run``); Mosquitto with the shipped config and its dynamic-security users; two backend
replicas (``python -m backend``, distinct client ids, one share group); InfluxDB with authentication.

What happens (docs/reliability.md): for ``--duration`` seconds the meters report once a second while
:mod:`chaoslib.faults` kills, stops and restarts processes and unplugs, resets and garbles meters; the last part is
quiet. Then every meter stops producing at a moment its queue is empty, the run waits until the gateway holds
nothing (no queued reading, none awaiting a receipt), waits for a rollup pass, and checks:

- every reading produced against InfluxDB's raw points (:mod:`chaoslib.reconcile`): stored once with every field
  equal, or excused by the meter's own count (dropped from its full queue, lost in RAM at a reset); anything else
  is lost, duplicated, differing or phantom;
- each meter's energy by its register against ``GET /api/v1/analytics/consumo`` at 15 min, hour and day
  (:mod:`chaoslib.energy`), and the site's;
- and reports the delay to the end-to-end receipt, the broker crossings per reading, the gateway's counters, and
  each process's peak RSS and CPU.

Exit status: 0 when every check passed, 1 when one failed (the report names it), 2 when the chain could not be
set up. The report goes to standard output (``--json``: as JSON); progress to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.chaoslib.energy import check_energy, wait_rollups  # noqa: E402
from bench.chaoslib.faults import FaultRunner, plan  # noqa: E402
from bench.chaoslib.fleet import Fleet  # noqa: E402
from bench.chaoslib.reconcile import reconcile  # noqa: E402
from bench.chaoslib.report import build, text  # noqa: E402
from bench.chaoslib.stack import ADMIN_USER, INFLUX_DB, SITE, Stack  # noqa: E402
from bench.chaoslib.tap import Tap  # noqa: E402
from bench.chaoslib.watch import GatewayCounters, ProcessPeaks  # noqa: E402
from devstack.processes import ServiceError  # noqa: E402
from devstack.security import OPS_MQTT_USER, PRIVATE_UMASK  # noqa: E402
from sim.firmware import build_firmware  # noqa: E402

SAMPLE_S = 1.0
CUT_TIMEOUT_S = 30.0


def echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load and faults (default 600)")
    ap.add_argument("--seed", default="1", help="seeds the fault schedule, the households and the device ids")
    ap.add_argument("--meters", type=int, default=5, help="meters, one of them the firmware in simavr (default 5)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="seconds the drain may take (default 120)")
    ap.add_argument("--workdir", help="keep logs, configs and data here (default: a temporary folder, removed "
                                      "after a passing run)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap


def drain(counters: GatewayCounters, stack: Stack, timeout: float) -> bool:
    """True once the gateway holds no reading: nothing queued, nothing awaiting the backend's receipt."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = counters.poll(stack.gateway.pid)
        if status is not None and status["queue"]["rows"] == 0 and status["queue"]["unconfirmed_rows"] == 0:
            return True
        time.sleep(0.5)
    return False


def token_for(stack: Stack) -> str:
    """An admin token from whichever replica answers."""
    for backend in stack.backends:
        try:
            r = httpx.post(f"{backend.url}/api/v1/auth/token",
                           json={"username": ADMIN_USER, "password": stack.admin_password}, timeout=10)
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            return str(r.json()["access_token"])
    raise ServiceError("no backend replica issued a token")


class ChaosRun:
    """One run, phase by phase: :meth:`start`, :meth:`load` (the faults), :meth:`finish` (cut-off, drain,
    rollups), :meth:`check` (the report); :meth:`close` stops everything whatever happened."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.t_begin = time.monotonic()
        self.timings: dict[str, float] = {}
        link_dir = workdir / "links"
        link_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "meters").mkdir(exist_ok=True)
        build_out, self.no_firmware = build_firmware(workdir / "firmware")
        if build_out is None:
            echo(f"chaos: no firmware meter: {self.no_firmware}")
        self.fleet = Fleet(args.meters, args.seed, link_dir, workdir / "meters", build_out)
        self.stack = Stack(workdir / "stack", self.fleet.devices, link_dir)
        self.counters = GatewayCounters(self.stack.gateway.status_url)
        self.peaks = ProcessPeaks()
        self.tap = Tap(self.stack.broker.host, self.stack.broker.port, OPS_MQTT_USER, self.stack.ops_password_file,
                       SITE)
        self.runner = FaultRunner(
            {"gateway": self.stack.gateway, "mosquitto": self.stack.broker, "influxd": self.stack.influx,
             **{f"backend-{i}": b for i, b in enumerate(self.stack.backends, start=1)}},
            before_gateway_kill=lambda: self.counters.poll(self.stack.gateway.pid), echo=echo)

    def _mark(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.timings[phase] = round(now - since, 1)
        return now

    def pids(self) -> dict[str, int | None]:
        avr = self.fleet.avr
        return {**self.stack.pids(), "simavr": avr.pid if avr else None, "chaos+sim": os.getpid()}

    def start(self) -> None:
        """The servers, the tap (before any reading, so it sees them all), then the meters."""
        self.stack.start()
        self.tap.start()
        if not self.tap.connected.wait(10):
            raise ServiceError("the tap (ops user) could not connect to the broker")
        self.fleet.start()
        self._mark("startup_s", self.t_begin)
        echo(f"chaos: chain up in {self.timings['startup_s']:.1f} s, {len(self.fleet.devices)} meters; "
             f"workdir {self.workdir}")

    def load(self) -> None:
        """``--duration`` seconds of readings and faults, sampling the processes every second."""
        avr = self.fleet.avr
        schedule = plan(self.args.seed, self.args.duration, self.fleet.devices, avr.device if avr else None,
                        len(self.stack.backends))
        self.runner.start(schedule, list(self.fleet.meters))
        next_sample = 0.0
        while self.runner.now_s() < self.args.duration:
            self.runner.tick()
            if self.runner.now_s() >= next_sample:
                next_sample = self.runner.now_s() + SAMPLE_S
                self.peaks.sample(self.pids())
                self.counters.poll(self.stack.gateway.pid)
            time.sleep(0.05)
        if not self.runner.wait_processes(120):
            self.runner.errors.append("a process fault was still running 120 s after the run's end")
        self.timings["run_s"] = round(self.runner.now_s(), 1)
        self.peaks.sample(self.pids())

    def finish(self) -> bool:
        """Stop producing, drain the gateway, wait for a rollup pass; True when the gateway drained."""
        self.timings["cut_s"] = round(self.fleet.cut(CUT_TIMEOUT_S), 1)
        t = time.monotonic()
        drained = drain(self.counters, self.stack, self.args.drain_timeout)
        t = self._mark("drain_s", t)
        echo(f"chaos: meters cut in {self.timings['cut_s']:.1f} s, gateway "
             f"{'drained' if drained else 'NOT drained'} in {self.timings['drain_s']:.1f} s")
        if not wait_rollups(self.stack.influx, INFLUX_DB, int(time.time() * 1000), 60):
            self.runner.errors.append("no rollup pass within 60 s after the drain")
        self._mark("rollups_s", t)
        self.peaks.sample(self.pids())
        return drained

    def check(self, drained: bool) -> dict[str, Any]:
        """Reconcile, check the energy, and build the report."""
        t = time.monotonic()
        records = self.fleet.records()
        devices, figures, points = reconcile(self.stack.influx, INFLUX_DB, SITE, records, self.tap.snapshot())
        energy = check_energy(self.stack.api, lambda: token_for(self.stack), SITE, points, self.fleet.devices)
        self._mark("checks_s", t)
        sims = len(self.fleet.sims)
        meta = {
            "seed": self.args.seed, "duration_s": self.args.duration, "meters": len(self.fleet.devices),
            "firmware": f"{sims} simulated, 1 real firmware in simavr" if self.fleet.avr
            else f"{sims} simulated, no firmware: {self.no_firmware}",
            **self.timings, "total_s": round(time.monotonic() - self.t_begin, 1), "workdir": str(self.workdir),
        }
        return build(meta=meta, faults=sorted(self.runner.log, key=lambda f: f.start_s), devices=devices,
                     figures=figures, energy=energy, gateway=self.counters.totals(), queue=self.counters.queue,
                     links=self.fleet.faults_applied(), traffic=self.tap.traffic(), usage=self.peaks.usage(),
                     drained=drained, errors=self.runner.errors)

    def close(self) -> None:
        self.tap.stop()
        self.fleet.stop()
        self.stack.stop()
        self.runner.release()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    chaos = ChaosRun(args, workdir)
    try:
        chaos.start()
        chaos.load()
        return chaos.check(chaos.finish())
    finally:
        chaos.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.meters < 1 or args.duration < 60:
        echo("chaos: --meters must be at least 1 and --duration at least 60 s")
        return 2
    os.umask(PRIVATE_UMASK)  # secrets, queue and data owner-only, as devstack runs them
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cds-chaos-")).resolve()
    try:
        report = run(args, workdir)
    except (ServiceError, RuntimeError, OSError) as exc:
        echo(f"chaos: could not run the chain: {exc}; logs in {workdir}")
        return 2
    print(json.dumps(report, indent=2) if args.json else text(report), flush=True)
    if report["verdict"] == "PASS" and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif report["verdict"] != "PASS":
        echo(f"chaos: logs, configs and data kept in {workdir}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
