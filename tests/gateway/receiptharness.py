"""Harness for the end-to-end receipt tests: the real gateway subprocess, a real ``python -m backend`` subprocess and
the real InfluxDB, checked against the simulator's ground truth.

What "stored" means here. InfluxDB keys a point by device and timestamp, not by ``seq``, so the checks work on
points: a reading counts as stored when InfluxDB has the point it was stamped with (its timestamp as the gateway
published it, seen by a plain MQTT subscriber), and :func:`check_stored` asserts that no point holds another reading
instead (the gateway keeps a boot's timestamps unique: gateway/link.py ``Progress.stamp``).

- :func:`check_stored`: every reading the gateway acknowledged to a meter ends up in InfluxDB, nothing else does,
  and the gateway lets go of it.
- :class:`DeletedOnlyWhenStored`: sampled over a test, the gateway never deletes a reading InfluxDB does not have.
  Each sample takes, in this order, the readings the meters saw acknowledged (committed by the gateway), the
  readings still in the gateway's queue file (unsent and sent rows), and the points in InfluxDB: an acknowledged
  reading missing from the queue file was deleted before the second step, so its point must be in the third.
  While InfluxDB does not answer, what was deleted meanwhile is checked at its next answer (the tests also check
  that nothing is confirmed during such an outage).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from gwharness import Collector, GatewayProcess, Key, wait_drops_counted

from backend.settings import Settings
from devstack.influxdb import InfluxError, InfluxService
from devstack.mosquitto import MosquittoService
from protocol import mqtt
from sim.port import VirtualMeter
from tests.backend.conftest import BackendProcess, make_settings, purge_session

RECEIPT_TIMEOUT_S = 1.0
REPLAY_WINDOW_S = 2.0
FAST_RECEIPTS = {"receipt_timeout_s": RECEIPT_TIMEOUT_S, "replay_window_s": REPLAY_WINDOW_S}
"""Gateway queue settings of these tests: every window far shorter than the outages they stage."""

Point = tuple[str, int]
"""(device, timestamp ms): what InfluxDB keys a reading by (site and gateway are fixed per test)."""

_reading = msgspec.json.Decoder(mqtt.Reading)


class Backend:
    """``python -m backend`` on ``broker`` writing to database ``db`` (= the test's site), share group ``g-<db>``."""

    def __init__(self, workdir: Path, broker: MosquittoService, influx: InfluxService, db: str, **overrides: Any):
        self.settings: Settings = make_settings(broker, influx, db, **overrides)
        self.proc = BackendProcess(self.settings, workdir)
        self.broker = broker

    def metric(self, name: str, label: str = "") -> float:
        total = 0.0
        for line in self.proc.metrics().splitlines():
            if line.startswith(name + "{") and (not label or f'"{label}"' in line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def close(self) -> None:
        self.proc.stop()
        purge_session(self.broker.host, self.broker.port, self.settings.resolved_client_id())


@dataclass
class Chain:
    """Meters -> gateway -> broker -> backend -> InfluxDB database ``db``; ``seen`` observes the gateway's uplink."""

    meters: list[VirtualMeter]
    gw: GatewayProcess
    influx: InfluxService
    db: str
    seen: Collector

    def points(self) -> dict[Point, tuple[int, int]]:
        """Every reading point of the test's site in InfluxDB: (device, ts) -> (boot, seq)."""
        q = (f"SELECT seq, boot FROM \"{self.db}\".\"raw\".\"readings\" WHERE site = '{self.gw.site}' "
             "GROUP BY device")  # fmt: skip
        for _ in range(10):
            rows = self.influx.rows(q, db=self.db)
            # InfluxDB 1.x keeps each field of a point apart in its cache: a query racing a write may see one field
            # of a point and not yet the other; ask again
            if all(r["boot"] is not None and r["seq"] is not None for r in rows):
                break
            time.sleep(0.05)
        return {(r["device"], r["time"]): (int(r["boot"]), int(r["seq"])) for r in rows if r["boot"] is not None}

    def point_of(self, key: Key) -> Point | None:
        """The point the gateway stamped ``key`` with (None: not published yet)."""
        r = self.seen.readings.get(key)
        return None if r is None else (key[0], r.ts)

    def acked(self) -> set[Key]:
        return {(m.device, b, s) for m in self.meters for b, s in m.truth().must_have()}

    def held(self) -> set[Key]:
        return held(self.gw)

    def not_stored(self, keys: set[Key], points: dict[Point, tuple[int, int]]) -> set[Key]:
        return {k for k in keys if (p := self.point_of(k)) is None or p not in points}


def held(gw: GatewayProcess) -> set[Key]:
    """Readings in the gateway's queue file, unsent or sent (one read transaction: one consistent snapshot)."""
    db = sqlite3.connect(gw.queue_path, timeout=30)
    try:
        db.execute("BEGIN")
        keys = {(d, b, s) for d, b, s in db.execute("SELECT device, boot, seq FROM readings")}
        for (payload,) in db.execute("SELECT payload FROM replay"):
            r = _reading.decode(payload)
            keys.add((r.device, r.boot, r.seq))
        db.execute("COMMIT")
    finally:
        db.close()
    return keys


class DeletedOnlyWhenStored:
    """Samples the rule in a thread until :meth:`stop`; ``violations`` lists readings deleted but not stored."""

    def __init__(self, chain: Chain) -> None:
        self.samples = 0
        self.violations: list[Key] = []
        self.deleted = 0
        """Readings deleted from the gateway at the last sample."""
        self._stop = threading.Event()

        def run() -> None:
            unchecked: set[Key] = set()  # deleted while InfluxDB could not be asked: checked at its next answer
            while not self._stop.wait(0.1):
                deleted = chain.acked() - chain.held()
                self.deleted = len(deleted)
                try:
                    points = chain.points()
                except InfluxError:
                    unchecked |= deleted
                    continue
                self.violations += sorted(chain.not_stored(deleted | unchecked, points))[:10]
                unchecked = set()
                self.samples += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def check_stored(chain: Chain, wait_for: Callable[..., Any], timeout: float = 60.0) -> dict[str, int]:
    """Wait until everything acknowledged so far is in InfluxDB and gone from the gateway; nothing invented, nothing
    lost at the meters. Returns figures: readings checked, and how many share their point with another reading."""
    snapshot = chain.acked()
    assert snapshot, "nothing acknowledged yet"

    def missing() -> set[Key]:
        return chain.not_stored(snapshot, chain.points())

    wait_for(lambda: not missing(), timeout, interval=0.2,
             what=lambda: f"{len(missing())} acknowledged readings not in InfluxDB, e.g. {sorted(missing())[:5]}\n"
                          f"{chain.gw.status()['queue']}\n{chain.gw.log_tail()}")  # fmt: skip
    points = chain.points()
    produced = {(m.device, r.boot, r.seq) for m in chain.meters for r in m.truth().produced}
    invented = {(d, b, s) for (d, _), (b, s) in points.items()} - produced
    assert not invented, f"stored readings no meter produced: {sorted(invented)[:10]}"
    # A meter drops its oldest readings only when its ring is full, which takes a gateway starved for seconds (seen
    # with two test suites and a CPU hog on two cores). That loss is the meter's, outside what receipts promise, but
    # it must not be silent: the gateway counts, from the meter's STATUS, every dropped reading it never got.
    wait_drops_counted(chain.gw, chain.meters, lambda: {(d, b, s) for (d, _), (b, s) in chain.points().items()},
                       wait_for, timeout=30, interval=0.2)
    collided = sum(points[p] != k[1:] for k in snapshot if (p := chain.point_of(k)) is not None)
    assert collided == 0, f"{collided} of {len(snapshot)} readings share a point"
    # the receipts arrive after the points: the gateway lets go of them once they are confirmed
    wait_for(lambda: not snapshot & chain.held(), 30, interval=0.2,
             what=lambda: f"{len(snapshot & chain.held())} stored readings still held by the gateway")
    return {"checked": len(snapshot), "collided": collided}
