"""What the broker carried: every uplink batch and every receipt, seen by a plain subscriber as the ``ops`` user.

Two figures come from here and nowhere else. **Replayed volume**: how many times each reading crossed the broker
(first sends, re-sends after a missing receipt, paho's redeliveries after a reconnect). **Delay**: from the
moment a meter produced a reading to the first receipt naming a batch that carried it — the backend sends a
receipt only once InfluxDB accepted the batch and its dirty marks, so that is "stored and confirmed".

The tap is not a member of the backend's share group (the broker's ACL would refuse it; ``ops`` reads everything
and joins nothing), so it costs the chain nothing. It keeps a persistent session (clean start off, one hour) so a
broker restart does not make it miss what the broker saved; a broker killed with -9 can still make it miss
messages PUBACKed after the broker's last autosave — the gateway re-sends those readings under new batch ids,
which the tap then sees, so the figures stay close (they are a lower bound of the broker's traffic).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import mqtt

Reading = tuple[str, int, int]
"""(device, boot, seq)."""
TapView = tuple[Counter[Reading], dict[Reading, int], dict[Reading, int]]
"""(crossings, published timestamp, first receipt time) per reading: :meth:`Tap.snapshot`."""


class Tap:
    """Subscribes to the site's uplink readings and downlink receipts until :meth:`stop`."""

    def __init__(self, host: str, port: int, username: str, password_file: Path, site: str) -> None:
        self._site = site
        self._lock = threading.Lock()
        self.carried: Counter[Reading] = Counter()
        """Times each reading crossed the broker."""
        self.stamped: dict[Reading, int] = {}
        """The timestamp the gateway published each reading with (the last one seen)."""
        self.confirmed_ms: dict[Reading, int] = {}
        """Wall-clock time of the first receipt that covered each reading."""
        self.batches = 0
        self.receipts = 0
        self.undecodable = 0
        self.connected = threading.Event()
        """Set at the first successful connection (the run starts its meters only then)."""
        self._batch_readings: dict[str, list[Reading]] = {}
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"chaos-tap-{site}", protocol=paho.MQTTv5)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._address = (host, port)
        self._username = username
        self._password_file = password_file

    def start(self) -> None:
        """Connect in the background (the password file exists once the broker's users were made)."""
        self._client.username_pw_set(self._username, self._password_file.read_text(encoding="utf-8").strip())
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._client.connect_async(*self._address, keepalive=10, clean_start=False, properties=props)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.connected.set()
            client.subscribe([(f"{mqtt.ROOT}/{self._site}/+/up/readings", 1),
                              (f"{mqtt.ROOT}/{self._site}/+/down/receipts", 1)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = int(time.time() * 1000)
        try:
            if msg.topic.endswith("/up/readings"):
                batch = mqtt.batch_decoder.decode(msg.payload)
                with self._lock:
                    self._on_batch(batch, now)
            else:
                receipt = mqtt.receipt_decoder.decode(msg.payload)
                with self._lock:
                    self.receipts += 1
                    for batch_id in receipt.stored:
                        self._confirm(batch_id, now)
        except msgspec.DecodeError:
            with self._lock:
                self.undecodable += 1

    def _on_batch(self, batch: mqtt.ReadingBatch, now: int) -> None:
        self.batches += 1
        keys = [(r.device, r.boot, r.seq) for r in batch.readings]
        for r, key in zip(batch.readings, keys, strict=True):
            self.carried[key] += 1
            self.stamped[key] = r.ts
        if batch.batch_id:
            self._batch_readings[batch.batch_id] = keys

    def _confirm(self, batch_id: str, at_ms: int) -> None:
        # a receipt for a batch the tap never saw (lost in a broker crash) confirms nothing here: its readings'
        # delay stays unmeasured rather than guessed
        for key in self._batch_readings.get(batch_id, ()):
            self.confirmed_ms.setdefault(key, at_ms)

    def traffic(self) -> dict[str, int]:
        """Messages the tap saw: uplink batches, receipts, and payloads it could not decode."""
        with self._lock:
            return {"batches": self.batches, "receipts": self.receipts, "undecodable": self.undecodable}

    def snapshot(self) -> TapView:
        """Copies of (carried, stamped, confirmed_ms)."""
        with self._lock:
            return Counter(self.carried), dict(self.stamped), dict(self.confirmed_ms)
