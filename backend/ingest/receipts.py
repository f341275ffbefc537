"""End-to-end delivery receipts, the backend's side: tell each gateway which of its uplink batches are finished.

Why: a broker's PUBACK is not enough for a gateway to forget a reading (Mosquitto restores its last autosave after
a crash; a client that is not a backend may sit in our share group; an ACL may hide a topic from us). So a gateway
names each batch (``ReadingBatch.batch_id``, see protocol/mqtt.py) and keeps its readings until it finds the id in
a :class:`protocol.mqtt.Receipt` on ``cds/v1/{site}/{gateway}/down/receipts``.

When a batch is receipted: once every job of its message is done and none failed — its readings and their dirty
marks written to InfluxDB (the moment its MQTT ack becomes due), or the whole message dead-lettered — i.e. when the
backend will never need the gateway's copy again. A dead letter that could not be published gets no receipt: the
gateway sends the batch again later and it is refused (and dead-lettered) again, instead of vanishing. A batch
without an id (an older gateway) gets none. HTTP ingest answers its caller directly and sends none.

To whom: the gateway of the topic the message came on (the broker's ACL vouches for it), never the site and gateway
named in the payload, so no gateway can make the backend confirm another gateway's batches.

Coalesced: ids are collected per gateway and published together when the event loop next gets round to it
(``call_soon``), so one InfluxDB write of many messages yields one receipt per gateway (lists longer than
``MAX_RECEIPT_IDS`` are split).

Never in the way: each publish runs in its own task; neither the MQTT ack nor the next write waits for it. A failed
publish (broker away, refused, no PUBACK in time) is counted (``cds_ingest_receipts_total{outcome="failed"}``) and
logged; it costs only a re-send by the gateway after its receipt timeout, which stores the same points again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, Literal

import msgspec

from backend.errors import MqttUnavailableError
from backend.ingest.bridge import MqttBridge
from backend.metrics import Metrics
from protocol import mqtt

log = logging.getLogger(__name__)

Outcome = Literal["stored", "dead_lettered"]

PUBLISH_TIMEOUT_S: Final = 10.0
"""How long a receipt waits for the broker's PUBACK before it counts as failed."""


class _BatchIdOnly(msgspec.Struct):
    """Just the id of an uplink batch, to receipt a payload whose readings failed validation."""

    batch_id: mqtt.BatchId = ""


_batch_id_decoder: Final = msgspec.json.Decoder(_BatchIdOnly)


def batch_id_of(payload: bytes) -> str:
    """The batch id of a payload that was refused as a whole; empty when it is not readable JSON with a valid id
    (such a payload cannot be receipted, and its gateway sends it again)."""
    try:
        return _batch_id_decoder.decode(payload).batch_id
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return ""


class ReceiptSender:
    """Collects finished batch ids per gateway and publishes them as receipts in the background."""

    def __init__(self, bridge: MqttBridge, metrics: Metrics) -> None:
        self.bridge = bridge
        self.metrics = metrics
        self._pending: dict[tuple[str, str], dict[Outcome, list[str]]] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, site: str, gateway: str, batch_id: str, outcome: Outcome) -> None:
        """Receipt ``batch_id`` to ``site``/``gateway`` (the topic's ids) at the next flush."""
        lists = self._pending.setdefault((site, gateway), {"stored": [], "dead_lettered": []})
        lists[outcome].append(batch_id)
        self.metrics.receipted.labels(outcome).inc()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        now_ms = int(time.time() * 1000)
        step = mqtt.MAX_RECEIPT_IDS
        for (site, gateway), lists in pending.items():
            stored, dead = lists["stored"], lists["dead_lettered"]
            for i in range(0, max(len(stored), len(dead)), step):
                receipt = mqtt.Receipt(stored=stored[i : i + step], dead_lettered=dead[i : i + step], ts=now_ms)
                task = asyncio.create_task(self._publish(mqtt.receipts_topic(site, gateway), receipt))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _publish(self, topic: str, receipt: mqtt.Receipt) -> None:
        try:
            await self.bridge.publish(topic, mqtt.json_encoder.encode(receipt), qos=1, timeout=PUBLISH_TIMEOUT_S)
        except MqttUnavailableError as exc:
            self.metrics.receipts.labels("failed").inc()
            log.warning("receipt not published; the gateway will send the batches again",
                        extra={"topic": topic, "error": str(exc), "batches": len(receipt.stored)
                               + len(receipt.dead_lettered)})  # fmt: skip
            return
        self.metrics.receipts.labels("published").inc()

    async def stop(self, timeout: float) -> None:
        """Publish what is collected and wait (bounded) for the publishes in progress; called before disconnecting."""
        if self._pending:
            self._flush()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
