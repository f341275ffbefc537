"""Harness for the gateway's tests (used by conftest.py and the tests): the gateway as a real subprocess,
simulated meters on ptys, and a persistent-session MQTT subscriber that checks every reading against the
simulator's ground truth.

The delivery check (:func:`check_delivery`) is the gateway's one delivery rule: every reading a meter produced arrives
exactly once per ``(device, boot, seq)`` (duplicates on the wire must be identical), or the meter itself
discarded it (ring overflow or reset, in the simulator's ground truth, and then the gateway counted it), or the
gateway dropped it under its stated full-queue policy (counted). Nothing else missing, nothing invented.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack.mosquitto import MosquittoService
from protocol import mqtt
from sim.port import VirtualMeter
from sim.truth import GroundTruth

REPO = Path(__file__).resolve().parents[2]
_STATUS_LINE = re.compile(r"status page on http://[^/]+:(\d+)/")
Key = tuple[str, int, int]


class GatewayProcess:
    """``python -m gateway run`` in a subprocess with a generated gateway.toml; SIGKILL-able."""

    def __init__(self, workdir: Path, broker: MosquittoService, site: str, ports: list[str], **sections: Any):
        self.workdir = workdir
        self.site = site
        self.gateway = "gw-1"
        self.config = workdir / "gateway.toml"
        self.queue_path = workdir / "queue.sqlite3"
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.status_port = 0
        """The status page's port, once this incarnation has logged it (0 before)."""
        self._log_start = 0
        self.starts = 0
        conf: dict[str, dict[str, Any]] = {
            "serial": {"ports": ports, "rescan_s": 0.2, "reopen_min_s": 0.05, "reopen_max_s": 0.3,
                       "sync_interval_s": 0.2, "config_timeout_s": 2.0},
            "queue": {"path": str(self.queue_path), "commit_window_ms": 5},
            "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5,
                     "status_interval_s": 1.0, "keepalive_s": 10},
            "status": {"bind": "127.0.0.1", "port": 0},
        }  # fmt: skip
        for name, values in sections.items():
            conf[name].update(values)
        self._conf = conf

    def _write_config(self) -> None:
        lines = [f'site = "{self.site}"', f'gateway = "{self.gateway}"', 'log_level = "INFO"']
        for name, values in self._conf.items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, wait: bool = True) -> None:
        # Port 0: the gateway binds a free port itself and logs it. A port chosen here could be taken before the
        # gateway binds it (by another test's process, or by the gateway's own MQTT connection's ephemeral port).
        self.status_port = 0
        self._write_config()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=log, env=env,
            )  # fmt: skip
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"gateway exited:\n{self.log_tail()}"
            try:
                self.status()
                return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"gateway status page not up within {timeout} s:\n{self.log_tail()}")

    def bound_port(self) -> int:
        """The status page's port as this incarnation logged it; ConnectionRefusedError until it has."""
        if not self.status_port:
            with self.log_path.open("rb") as f:
                f.seek(self._log_start)
                found = _STATUS_LINE.findall(f.read().decode(errors="replace"))
            if not found:
                raise ConnectionRefusedError("the gateway has not logged its status page yet")
            self.status_port = int(found[-1])
        return self.status_port

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.bound_port()}/status.json"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def counter(self, name: str) -> int:
        return int(self.status()["counters"].get(name, 0))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -9
        self.proc = None
        return rc

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Collector:
    """A durable consumer: MQTT 5, persistent session (clean_start False), QoS 1 on everything under the site.

    Records each reading once per key; a duplicate must be byte-identical in content (``mismatches`` otherwise).
    """

    def __init__(self, broker: MosquittoService, site: str, username: str = "", password: str = "") -> None:
        self.site = site
        self.readings: dict[Key, mqtt.Reading] = {}
        self.duplicates = 0
        self.mismatches: list[tuple[mqtt.Reading, mqtt.Reading]] = []
        self.other: list[tuple[str, bytes]] = []
        self.messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"collector-{site}-{secrets.token_hex(3)}", protocol=paho.MQTTv5
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector: no SUBACK")

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if not flags.session_present:
            client.subscribe(f"cds/v1/{self.site}/#", qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages += 1
            if not msg.topic.endswith("/up/readings"):
                self.other.append((msg.topic, bytes(msg.payload)))
                return
            batch = mqtt.batch_decoder.decode(msg.payload)
            for r in batch.readings:
                key = (r.device, r.boot, r.seq)
                seen = self.readings.get(key)
                if seen is None:
                    self.readings[key] = r
                else:
                    self.duplicates += 1
                    if seen != r:
                        self.mismatches.append((seen, r))

    def pause(self) -> None:
        """Disconnect cleanly, keeping the session: the broker queues our messages (a backend that is down)."""
        self.client.disconnect()
        self.client.loop_stop()

    def resume(self) -> None:
        """Connect again with the same client id and ``clean_start`` False (resubscribing if the session is gone)."""
        self._subscribed.clear()
        self.client.reconnect()
        self.client.loop_start()

    def keys(self, device: str | None = None) -> set[Key]:
        with self._lock:
            return {k for k in self.readings if device is None or k[0] == device}

    def count(self) -> int:
        with self._lock:
            return len(self.readings)

    def topic_payloads(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.other if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_delivery(
    meters: list[VirtualMeter],
    collector: Collector,
    gw: GatewayProcess,
    wait_for: Callable[..., Any],
    *,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Wait for, then assert, the delivery rule. Returns figures for the test to make further claims on.

    The rule is checked on the readings of a snapshot of the meters' ground truth. The gateway's ``dropped_full``
    counts drops of any reading, so the comparison is exact only when every drop it counts happened before the
    snapshot: a full queue keeps dropping until the gateway drains it, and a gateway starved of CPU for a second
    fills its queue again. So whenever the counter moves after a snapshot, the snapshot is taken again; the wait
    ends on a snapshot after which nothing was dropped, and its figures are the ones asserted.
    """
    snapshot: dict[str, GroundTruth] = {}
    dropped_before = -1
    accepted: dict[str, Any] = {}

    def outstanding() -> set[Key]:
        missing: set[Key] = set()
        for m in meters:
            now = m.truth()  # readings unacked at the snapshot may since have been dropped by the meter
            for boot, seq in snapshot[m.device].keys() - now.dropped - now.lost:
                if (m.device, boot, seq) not in collector.readings:
                    missing.add((m.device, boot, seq))
        return missing

    def delivered() -> bool:
        nonlocal snapshot, dropped_before
        status = gw.status()
        dropped = status["queue"]["dropped_full"]
        if dropped != dropped_before:  # a drop since the snapshot (or none taken yet): it may be of a later reading
            dropped_before = dropped
            snapshot = {m.device: m.truth() for m in meters}
            return False
        if len(outstanding()) != dropped:
            return False
        status = gw.status()  # unchanged since before the count: every counted drop is among the snapshot's readings
        if status["queue"]["dropped_full"] != dropped:
            return False
        accepted.update(status)
        return True

    wait_for(delivered, timeout, interval=0.05,
             what=lambda: f"delivery; {len(outstanding())} missing vs {gw.status()['queue']['dropped_full']} dropped "
                          f"by the full queue; missing {sorted(outstanding())[:10]}...")
    status = accepted
    # what arrived first, then what was produced: the meters go on producing (and the gateway forwarding) while
    # this runs, so the other order would find readings collected after the truth was taken, "invented"
    collected = {m.device: collector.keys(m.device) for m in meters}
    truths = {m.device: m.truth() for m in meters}
    missing_total = 0
    dropped_at_meter = 0
    ts_error = 0
    for m in meters:
        t = truths[m.device]
        produced = {(m.device, r.boot, r.seq): r for r in t.produced}
        got = collected[m.device]
        invented = got - produced.keys()
        assert not invented, f"readings that no meter produced: {sorted(invented)[:10]}"
        # ACKed before the snapshot (later ones may still be on their way); ACKs also pass declared drops
        must = {(m.device, b, s) for b, s in (t.must_have() & snapshot[m.device].keys()) - t.dropped - t.lost}
        # ACKed readings may only be missing if the gateway's drop-oldest policy discarded (and counted) them
        assert len(must - got) <= status["queue"]["dropped_full"], f"ACKed, never arrived: {sorted(must - got)[:10]}"
        for key in got:
            r, p = collector.readings[key], produced[key]
            expected = mqtt.reading_from_frame(m.device, p.boot, r.ts, p.frame)
            assert r == msgspec_replace_flags(expected, r.flags), f"values differ for {key}: {r} != {expected}"
            ts_error = max(ts_error, abs(r.ts - p.t_ms))
        snap_keys = snapshot[m.device].keys()  # GroundTruth.keys(), not a dict
        missing = {(m.device, b, s) for b, s in snap_keys} - got
        meter_lost = {(m.device, b, s) for b, s in t.dropped | t.lost}
        missing_total += len(missing - meter_lost)
        dropped_at_meter += len(t.dropped)
    assert not collector.mismatches, f"duplicates that differ: {collector.mismatches[:3]}"

    wait_drops_counted(gw, meters, collector.keys, wait_for, timeout=10)
    assert gw.status()["queue"]["skipped_unknown"] == 0
    dropped_full = status["queue"]["dropped_full"]
    assert missing_total == dropped_full, f"{missing_total} readings missing, {dropped_full} counted as dropped_full"
    return {
        "delivered": collector.count(),
        "duplicates": collector.duplicates,
        "dropped_at_meter_truth": dropped_at_meter,
        "dropped_full": dropped_full,
        "max_ts_error_ms": ts_error,
    }


def wait_drops_counted(gw: GatewayProcess, meters: list[VirtualMeter], delivered: Callable[[], set[Key]],
                       wait_for: Callable[..., Any], timeout: float, interval: float = 0.01) -> None:
    """Wait until the gateway has counted (from the meters' STATUS) every reading the meters discarded that is not
    in ``delivered()``: a discarded reading that had been committed but not yet ACKed (gateway killed) is delivered,
    not lost."""

    def lost_at_meter() -> int:
        return len({(m.device, b, s) for m in meters for b, s in m.truth().dropped} - delivered())

    wait_for(lambda: gw.status()["queue"]["dropped_at_meter"] == lost_at_meter(), timeout, interval=interval,
             what=lambda: f"the gateway counted {gw.status()['queue']['dropped_at_meter']} readings dropped at the "
                          f"meters, {lost_at_meter()} were")  # fmt: skip


def msgspec_replace_flags(r: mqtt.Reading, flags: int) -> mqtt.Reading:
    """A first transmission and its RESENT copy differ only in the RESENT flag bit."""
    assert flags & ~1 == r.flags & ~1, f"flags differ beyond RESENT: {flags} vs {r.flags}"
    return msgspec.structs.replace(r, flags=flags)
