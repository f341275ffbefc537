"""MQTT ingest: uplink readings into InfluxDB, acknowledged only after InfluxDB accepted them.

Flow (all on the asyncio loop; paho's thread only hands messages over, see backend/mqtt.py)::

    broker --$share/<group>/cds/v1/+/+/up/readings--> on_message --parse--> current batch
        --(batch_points reached or flush_ms elapsed)--> sealed queue --> writer tasks
        --ReadingStore.write (raw points, then dirty marks; tenacity retries while InfluxDB is unavailable)-->
        PUBACK of every message of the batch, in arrival order

- **Backpressure**: nothing is acknowledged while InfluxDB is down, so the broker stops sending after
  ``mqtt_receive_maximum`` unacknowledged messages and queues the rest in our persistent session.
- **Bad input**: a payload that cannot be used is counted by reason, published to
  ``cds/v1/_deadletter/<original topic>`` with the error (JSON envelope), then acknowledged so it never blocks
  the queue. Readings refused one by one (future timestamps) are dead-lettered as a ReadingBatch of just
  those readings while the rest of the batch is written. A batch InfluxDB refuses with a 4xx (e.g. a field
  type conflict) is retried message by message so only the guilty message is dead-lettered.
- **Receipts**: once a batch with an id is written (or dead-lettered), its gateway gets an end-to-end receipt on
  ``.../down/receipts`` (backend/ingest/receipts.py), so it may forget the readings; published in the background,
  coalesced per gateway, never delaying an ack or a write.
- Retained gateway status, device info and config results (non-shared subscriptions) update the Registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Final

import msgspec
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from backend.errors import InfluxRejectedError, InfluxUnavailableError, MqttUnavailableError
from backend.ingest.adoption import PRESENCE_ROOT, SessionAdopter, presence_decoder, presence_payload, presence_topic
from backend.ingest.bridge import Incoming, MqttBridge
from backend.ingest.devicebook import DeviceBook
from backend.ingest.limits import Budget
from backend.ingest.provisioning import REFUSING, Refusal
from backend.ingest.receipts import Outcome, ReceiptSender, batch_id_of
from backend.ingest.registry import Registry
from backend.ingest.validation import ParsedBatch, Reason, Rejection, convert_batch, decode_batch, topic_ids
from backend.metrics import Metrics
from backend.settings import Settings
from backend.store.readings import ReadingStore, Span, oldest_storable_ms
from protocol import ids, mqtt
from protocol.mqtt import DeviceInfo, ReadingBatch

log = logging.getLogger(__name__)

_DEAD_LETTER_MAX_PAYLOAD: Final = 65536


class DeadLetter(msgspec.Struct, frozen=True):
    """Payload published on ``cds/v1/_deadletter/<original topic>``."""

    reason: str
    error: str
    topic: str
    received_at_ms: int
    payload: str
    """The original payload (UTF-8, invalid bytes replaced, truncated to 64 KiB)."""
    truncated: bool = False


_dl_encoder: Final = msgspec.json.Encoder()


@dataclass(slots=True)
class _Pending:
    """One received message awaiting its PUBACK; ``remaining`` counts the jobs (write, dead letter) left."""

    msg: Incoming
    remaining: int = 0
    receipt: tuple[str, str, str] | None = None
    """(site, gateway, batch id) of an uplink batch whose gateway wants a receipt once every job is done."""
    outcome: Outcome = "stored"
    failed: bool = False
    """A job failed (a dead letter not published): no receipt, so the gateway sends the batch again."""


@dataclass(slots=True)
class _Item:
    pending: _Pending
    parsed: ParsedBatch


@dataclass(slots=True)
class _Batch:
    items: list[_Item] = field(default_factory=list)
    points: int = 0


def merge_spans(items: list[_Item]) -> dict[str, Span]:
    out: dict[str, Span] = {}
    for item in items:
        for device, (lo, hi) in item.parsed.spans.items():
            cur = out.get(device)
            out[device] = (lo, hi) if cur is None else (min(cur[0], lo), max(cur[1], hi))
    return out


class IngestService:
    """Owns the MQTT bridge and the batching writers of one replica."""

    def __init__(self, settings: Settings, store: ReadingStore, registry: Registry, metrics: Metrics,
                 devices: DeviceBook) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.devices = devices
        self.message_budget: Budget[tuple[str, str]] = Budget(settings.ingest_gateway_messages_per_s,
                                                              settings.ingest_gateway_burst)
        group = settings.mqtt_share_group
        me = settings.resolved_client_id()
        self.presence_topic = presence_topic(group, me)
        self.bridge = MqttBridge(settings, self.on_message, [
            (f"$share/{group}/{mqtt.READINGS_FILTER}", 1),
            (mqtt.STATUS_FILTER, 1),
            (mqtt.DEVICES_FILTER, 1),
            (mqtt.CONFIG_RESULT_FILTER, 1),
            (presence_topic(group, "+"), 1),
        ], will=(self.presence_topic, presence_payload(me, False)),
            birth=(self.presence_topic, presence_payload(me, True)))
        # Read at scrape time, so the gauge can never disagree with the bridge's own state.
        metrics.mqtt_connected.set_function(lambda: float(self.bridge.connected))
        self.adopter = SessionAdopter(self) if settings.mqtt_adopt_after_s > 0 else None
        self.receipts = ReceiptSender(self.bridge, metrics)
        self._acks: deque[_Pending] = deque()
        self._current = _Batch()
        self._sealed: asyncio.Queue[_Batch] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.Task[None]] = []
        self._busy = 0
        self.written_readings = 0

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        for i in range(max(1, self.settings.ingest_writes_in_flight)):
            self._writers.append(asyncio.create_task(self._writer(), name=f"ingest-writer-{i}"))
        await self.bridge.start()
        if self.adopter is not None:
            await self.adopter.start()

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Write and acknowledge what is pending (bounded wait), then disconnect; the rest is redelivered."""
        self._seal()
        deadline = time.monotonic() + drain_timeout
        while (self._busy or not self._sealed.empty()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.adopter is not None:
            await self.adopter.stop()
        await self.receipts.stop(max(0.0, deadline - time.monotonic()))
        if self.bridge.connected:  # a clean DISCONNECT sends no will: say we are gone, so a peer may adopt us
            with contextlib.suppress(MqttUnavailableError):
                await self.bridge.publish(self.presence_topic, presence_payload(self.bridge.client_id, False),
                                          retain=True, timeout=2.0)
        await self.bridge.stop()
        for task in [*self._writers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._writers, *self._tasks, return_exceptions=True)

    @property
    def unacked(self) -> int:
        return len(self._acks)

    # --- receiving ------------------------------------------------------------------------------------------

    def on_message(self, msg: Incoming) -> None:
        """Called on the loop for every message; never raises (bad input is dead-lettered)."""
        pending = _Pending(msg)
        self._acks.append(pending)
        try:
            if msg.topic.endswith("/up/readings"):
                self._on_readings(pending)
            elif msg.topic.startswith(PRESENCE_ROOT + "/"):
                self._on_presence(pending)
            else:
                self._on_state(pending)
        except Exception as exc:  # a bug must not stop ingest: keep the message aside and go on
            log.exception("unexpected error handling message", extra={"topic": msg.topic})
            self._reject(pending, Rejection("internal_error", repr(exc)))
        self._drain_acks()

    def _on_readings(self, pending: _Pending) -> None:
        msg = pending.msg
        try:
            site, gateway = topic_ids(msg.topic)
        except Rejection as rej:
            self._reject(pending, rej)
            return
        try:
            batch = decode_batch(msg.payload, max_bytes=self.settings.ingest_max_payload_bytes, site=site,
                                 gateway=gateway)
        except Rejection as rej:
            self._reject(pending, rej)
            return
        if not self.message_budget.take((site, gateway), time.monotonic()):
            if batch.batch_id:
                # Dropped with no receipt and no dead letter: a gateway that gets no receipt sends the batch
                # again later, so a burst beyond the budget costs an honest gateway a delay, not data, and a
                # flooding one costs one bucket check per message instead of a write or a dead letter (limits.py).
                self.registry.note_refused(site, gateway, "rate_limited")
                self.metrics.rejected.labels("rate_limited").inc()
                return
            # A gateway without receipts would lose what we drop: kept, and counted so the operator sees it.
            self.registry.note_refused(site, gateway, "over_rate_kept")
            self.metrics.messages.labels("readings", "over_rate_kept").inc()
        book = self.devices.book
        devices = {r.device for r in batch.readings}
        if all(book.verdict(site, gateway, d) == "owned" for d in devices):  # the common case: no I/O
            self._accept(pending, batch, {})
            return
        pending.remaining += 1  # held (not acknowledged) until the device book has decided
        self._spawn(self._resolve_then_accept(pending, batch, devices))

    async def _resolve_then_accept(self, pending: _Pending, batch: ReadingBatch, devices: set[str]) -> None:
        try:
            refused = await self.devices.resolve(batch.site, batch.gateway, devices, wait=True)
            self._accept(pending, batch, refused)
        except Exception as exc:  # a bug must not stop ingest (a cancellation on stop leaves it unacknowledged)
            log.exception("unexpected error provisioning a batch", extra={"topic": pending.msg.topic[:200]})
            self._reject(pending, Rejection("internal_error", repr(exc)))
        self._done(pending)

    def _accept(self, pending: _Pending, batch: ReadingBatch, refused: dict[str, Refusal]) -> None:
        """Write what the device book and the per-reading checks accept; dead-letter the rest."""
        site, gateway = batch.site, batch.gateway
        now_ms = int(time.time() * 1000)
        parsed = convert_batch(batch, now_ms=now_ms, max_future_ms=self.settings.ingest_max_future_s * 1000,
                               min_ts_ms=oldest_storable_ms(self.settings, now_ms), refused=refused)
        if parsed.batch_id:
            pending.receipt = (site, gateway, parsed.batch_id)
        if not parsed.lines:
            pending.outcome = "dead_lettered"  # every reading was refused on its own
        if parsed.rejected:
            for r in parsed.rejected:
                self.metrics.rejected.labels(r.reason).inc()
                self.registry.note_refused(site, gateway, r.reason)
            first = parsed.rejected[0]
            payload = mqtt.json_encoder.encode(
                ReadingBatch(site=site, gateway=gateway, readings=[r.reading for r in parsed.rejected]))
            self._spawn_dead_letter(pending, pending.msg.topic, payload, first.reason,
                                    f"{len(parsed.rejected)} reading(s) refused: {first.error}")
        if parsed.lines:
            pending.remaining += 1
            self._add(_Item(pending, parsed))
        self.metrics.messages.labels("readings", "accepted" if parsed.lines else "rejected").inc()

    def _on_presence(self, pending: _Pending) -> None:
        if not pending.msg.payload:
            return
        try:
            presence = presence_decoder.decode(pending.msg.payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for invalid UTF-8
            self._reject(pending, Rejection("schema", str(exc)))
            return
        if self.adopter is not None:
            self.adopter.on_presence(presence)

    def _on_state(self, pending: _Pending) -> None:
        msg = pending.msg
        try:
            site, gateway, rest = mqtt.split_topic(msg.topic)
            empty = len(msg.payload) == 0
            if rest == "status":
                self.registry.update_gateway(site, gateway,
                                             None if empty else mqtt.status_decoder.decode(msg.payload))
                kind = "status"
            elif rest.startswith("devices/"):
                device = rest.removeprefix("devices/")
                info = None if empty else mqtt.device_decoder.decode(msg.payload)
                if info is not None and info.device != device:
                    raise Rejection("topic_mismatch", f"DeviceInfo for {info.device} under topic of {device}")
                self._on_device_info(pending, site, gateway, device, info)
                kind = "device"
            elif rest == "up/config-result":
                result = mqtt.config_result_decoder.decode(msg.payload)
                verdict = self.devices.book.verdict(site, gateway, result.device)
                if verdict != "owned":
                    raise Rejection(REFUSING.get(verdict, "not_owner"),
                                    f"config result for {result.device}, not a meter of {site}/{gateway}")
                # Every replica sees every result; only the one holding the open request takes it.
                kind = "config_result" if self.registry.config_result(site, gateway, result) else "config_other"
            else:
                raise Rejection("bad_topic", f"unexpected topic {msg.topic[:200]!r}")
        except msgspec.ValidationError as exc:
            self._reject(pending, Rejection("schema", str(exc)))
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # UnicodeDecodeError before its base ValueError
            self._reject(pending, Rejection("invalid_json", str(exc)))
            return
        except ValueError as exc:
            self._reject(pending, Rejection("bad_topic", str(exc)))
            return
        except Rejection as rej:
            self._reject(pending, rej)
            return
        self.metrics.messages.labels(kind, "accepted").inc()

    def _on_device_info(self, pending: _Pending, site: str, gateway: str, device: str,
                        info: DeviceInfo | None) -> None:
        """A meter's DeviceInfo is its first sight (its HELLO): the device book may claim it for the gateway."""
        if not ids.is_device_id(device):
            raise Rejection("bad_topic", f"device id {device[:64]!r} in the topic is not 16 hex digits")
        verdict = self.devices.book.verdict(site, gateway, device)
        if verdict == "owned":
            self.registry.update_device(site, gateway, device, info)
        elif verdict in REFUSING:
            if info is not None:  # a cleared retained message of a meter not ours: nothing to keep or refuse
                raise Rejection(REFUSING[verdict], f"DeviceInfo of {device}, not a meter of {site}/{gateway}")
        elif info is not None:
            pending.remaining += 1
            self._spawn(self._claim_device(pending, site, gateway, info))

    async def _claim_device(self, pending: _Pending, site: str, gateway: str, info: DeviceInfo) -> None:
        try:
            refused = await self.devices.resolve(site, gateway, [info.device], wait=True)
            if info.device in refused:
                self.registry.note_refused(site, gateway, refused[info.device])
                self._reject(pending, Rejection(refused[info.device],
                                                f"DeviceInfo of {info.device} refused for {site}/{gateway}"))
            else:
                self.registry.update_device(site, gateway, info.device, info)
        except Exception as exc:  # a bug must not stop ingest
            log.exception("unexpected error provisioning a meter", extra={"topic": pending.msg.topic[:200]})
            self._reject(pending, Rejection("internal_error", repr(exc)))
        self._done(pending)

    # --- dead letters -----------------------------------------------------------------------------------------

    def _reject(self, pending: _Pending, rej: Rejection) -> None:
        if pending.msg.topic.endswith("/up/readings") and rej.reason not in ("bad_topic", "oversize"):
            self._receipt_refused(pending)
        self.metrics.rejected.labels(rej.reason).inc()
        self.metrics.messages.labels("any", "rejected").inc()
        log.warning("payload rejected", extra={"topic": pending.msg.topic[:200], "reason": rej.reason,
                                               "error": rej.error[:500]})
        self._spawn_dead_letter(pending, pending.msg.topic, pending.msg.payload, rej.reason, rej.error)

    def _receipt_refused(self, pending: _Pending) -> None:
        """A batch refused as a whole is receipted too, or its gateway would send it forever. Oversize payloads
        are not decoded at all (that is what the limit protects), and a bad topic names no gateway to answer."""
        try:
            site, gateway = topic_ids(pending.msg.topic)
        except Rejection:
            return
        batch_id = batch_id_of(pending.msg.payload)
        if batch_id:
            pending.receipt, pending.outcome = (site, gateway, batch_id), "dead_lettered"

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_dead_letter(self, pending: _Pending, topic: str, payload: bytes, reason: str, error: str) -> None:
        pending.remaining += 1
        self._spawn(self._dead_letter(pending, topic, payload, reason, error))

    async def _dead_letter(self, pending: _Pending, topic: str, payload: bytes, reason: str, error: str) -> None:
        envelope = DeadLetter(reason=reason, error=error[:2000], topic=topic, received_at_ms=int(time.time() * 1000),
                              payload=payload[:_DEAD_LETTER_MAX_PAYLOAD].decode("utf-8", "replace"),
                              truncated=len(payload) > _DEAD_LETTER_MAX_PAYLOAD)
        try:
            await self.bridge.publish(f"{mqtt.DEAD_LETTER_ROOT}/{topic}", _dl_encoder.encode(envelope),
                                      qos=1, timeout=10.0)
        except MqttUnavailableError as exc:
            self.metrics.dead_letter_failures.inc()
            log.error("dead letter not published", extra={"topic": topic[:200], "error": str(exc)})
            pending.failed = True
        self._done(pending)

    # --- batching and writing ---------------------------------------------------------------------------------

    def _add(self, item: _Item) -> None:
        batch = self._current
        if not batch.items:
            asyncio.get_running_loop().call_later(self.settings.ingest_flush_ms / 1000, self._seal_if, batch)
        batch.items.append(item)
        batch.points += item.parsed.accepted
        self.metrics.pending_points.set(batch.points)
        if batch.points >= self.settings.ingest_batch_points:
            self._seal()

    def _seal_if(self, batch: _Batch) -> None:
        if batch is self._current:
            self._seal()

    def _seal(self) -> None:
        batch = self._current
        if batch.items:
            self._sealed.put_nowait(batch)
            self._current = _Batch()
            self.metrics.pending_points.set(0)

    async def _writer(self) -> None:
        while True:
            batch = await self._sealed.get()
            self._busy += 1
            try:
                await self._write_items(batch.items)
            except Exception as exc:  # a bug must not kill the writer: every later batch would wait forever
                log.exception("unexpected error writing a batch", extra={"messages": len(batch.items)})
                for item in batch.items:
                    self._reject_written(item, "internal_error", repr(exc))
            finally:
                self._busy -= 1

    async def _write_items(self, items: list[_Item]) -> None:
        lines = [line for item in items for line in item.parsed.lines]
        spans = merge_spans(items)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(InfluxUnavailableError),
                wait=wait_exponential(multiplier=0.05, max=self.settings.ingest_retry_max_s),
                stop=stop_never, reraise=True,
            ):
                with attempt:
                    started = time.perf_counter()
                    try:
                        await self.store.write(lines, spans)
                    except InfluxUnavailableError as exc:
                        self.metrics.write_errors.labels("unavailable").inc()
                        log.warning("influx write failed, retrying", extra={"error": str(exc)[:300],
                                                                            "points": len(lines)})
                        raise
                    self.metrics.write_seconds.observe(time.perf_counter() - started)
        except InfluxRejectedError as exc:
            self.metrics.write_errors.labels("rejected").inc()
            if len(items) > 1:  # find the guilty message(s): write each alone
                for item in items:
                    await self._write_items([item])
                return
            reason: Reason = "beyond_retention" if "beyond retention" in str(exc) else "influx_rejected"
            self._reject_written(items[0], reason, str(exc))
            return
        self.written_readings += len(lines)
        self.metrics.readings_written.labels("mqtt").inc(len(lines))
        for item in items:
            self.metrics.count_site_readings(item.parsed.site, item.parsed.accepted)
            self.registry.note_readings({d: hi for d, (_, hi) in item.parsed.spans.items()})
            self._done(item.pending)

    def _reject_written(self, item: _Item, reason: Reason, error: str) -> None:
        pending = item.pending
        pending.outcome = "dead_lettered"
        self.metrics.rejected.labels(reason).inc()
        log.error("message not written", extra={"topic": pending.msg.topic[:200], "reason": reason,
                                                "error": error[:500]})
        self._spawn_dead_letter(pending, pending.msg.topic, pending.msg.payload, reason, error)
        self._done(pending)

    # --- acknowledgements -------------------------------------------------------------------------------------

    def _done(self, pending: _Pending) -> None:
        pending.remaining -= 1
        if pending.remaining == 0 and pending.receipt is not None and not pending.failed:
            self.receipts.add(*pending.receipt, pending.outcome)
        self._drain_acks()

    def _drain_acks(self) -> None:
        acks = self._acks
        while acks and acks[0].remaining <= 0:
            msg = acks.popleft().msg
            (msg.bridge or self.bridge).ack(msg)
        self.metrics.inflight.set(len(acks))
