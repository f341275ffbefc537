"""The forwarder's pump thread: which rows go to paho next, and what a PUBACK or a receipt means for them.

One loop, woken by commits, PUBACKs and receipts (and every 0.5 s for the timers): take the PUBACKs (a new batch's
rows move to the sent rows, tagged with its id — in receipts mode after waiting up to ``SETTLE_S`` in the queue for
the receipt, which usually comes first and deletes them where they are; a rejected one rewinds the cursor), take
the receipts (their batches' rows are deleted; one that overtook its PUBACK waits for it), then refill the in-flight
window — the
replay pass first, then re-sends of unconfirmed rows, then unsent rows, so readings keep arriving oldest first —
and only then write to SQLite, so the broker is busy while the queue works. The rules for replay windows and
re-sends are in gateway/sent.py and gateway/receipts.py.

A pump that fails is restarted from the first queued row with fresh state: delivery is at-least-once, and a
receipt for a batch of the failed pump finds its rows still queued (not yet moved) and deletes nothing.

:class:`gateway.forwarder.Forwarder` owns the MQTT client, the queues and the events, and inherits this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Final, Literal, NamedTuple

import paho.mqtt.client as paho

from gateway.errors import QueueError
from gateway.queue import DurableQueue
from gateway.receipts import Outcome, Receipts, Resend
from gateway.sent import Batch
from gateway.settings import Settings
from gateway.stats import Stats
from protocol import mqtt

log = logging.getLogger(__name__)

SETTLE_S: Final = 0.5
"""In receipts mode a PUBACKed batch's rows stay in the queue this long, waiting for its receipt, before they move to
the sent rows: the receipt usually comes sooner, and then the rows are deleted where they are, written once
instead of copied and deleted again (SQLite work and SD-card wear)."""


def batch_payload(site: str, gateway: str, payloads: list[bytes], sent_at: int, batch_id: str = "") -> bytes:
    """A ``ReadingBatch`` JSON document built from already-encoded ``Reading`` JSON objects (ids are plain ASCII)."""
    head = b'{"site":"%s","gateway":"%s","readings":[' % (site.encode(), gateway.encode())
    tail = b'],"sent_at":%d,"v":%d' % (sent_at, mqtt.SCHEMA_VERSION)
    if batch_id:
        tail += b',"batch_id":"%s"' % batch_id.encode()
    return head + b",".join(payloads) + tail + b"}"


class _Flight(NamedTuple):
    """A batch handed to paho: its rows ``first_id..last_id``, what it is, and the id a receipt will name."""

    first_id: int
    last_id: int
    readings: int
    kind: Literal["new", "replay", "resend"]
    """``new``: unsent rows (moved to the sent rows on PUBACK); ``replay``: a replay pass over the window;
    ``resend``: unconfirmed rows, re-tagged when fetched (nothing to do on PUBACK)."""
    batch_id: str


class _Settling(NamedTuple):
    """A PUBACKed batch whose rows are still in the queue, waiting briefly for its receipt (see ``SETTLE_S``)."""

    first_id: int
    last_id: int
    until: float
    """Monotonic time after which the rows move to the sent rows."""
    acked_ms: int


class Pump:
    """The pump half of :class:`gateway.forwarder.Forwarder` (a base class: it owns no client or thread)."""

    # provided by Forwarder
    settings: Settings
    queue: DurableQueue
    stats: Stats
    receipts: Receipts
    client: paho.Client
    inflight_messages: int
    _acks: SimpleQueue[tuple[int, bool]]
    _wake: threading.Event
    _stop: threading.Event
    _draining: threading.Event
    _connected: threading.Event
    _replay_requests: int
    _replay_reason: str
    _status_due: float
    _site: str
    _gw: str
    _topic: str
    _status_payload: Callable[[bool], bytes]

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                self._pump_loop()
            except Exception:  # never stop forwarding: restart from the first queued row (at-least-once)
                self.stats.error("internal")
                log.exception("forwarder pump failed; restarting it")
                self._stop.wait(1.0)

    def _pump_loop(self) -> None:
        # Connected already means this pump replaces one that failed: the replay requests so far were that pump's
        # (a pass it left unfinished is not resumed). A pump started with the forwarder runs before the first
        # CONNACK, so counting from 0 makes it serve that connection's request.
        p = _PumpState(seen_requests=self._replay_requests if self._connected.is_set() else 0)
        m = self.settings.mqtt
        while not self._stop.is_set():
            # PUBACKs, receipts and commits set _wake; the timeout still comes round for the idle prune, the
            # re-send check and the status message
            self._wake.wait(0.5)
            self._wake.clear()
            done = _Done()
            self._take_pubacks(p, done)
            self._take_receipts(p, done)
            if self._connected.is_set() and self._replay_requests != p.seen_requests:
                # A new request restarts any pass in progress from the oldest row: the broker may have crashed again
                # and lost what this pass had re-published. The pass ends at today's newest replay row: rows
                # PUBACKed after this CONNACK are in the restarted broker already.
                p.seen_requests = self._replay_requests
                p.replay_cursor, p.replay_upto = 0, self.queue.replay_upto()
                if p.replay_upto:
                    self.stats.inc("replays")
                    log.info("%s: re-publishing the %d readings PUBACKed in the last %g s", self._replay_reason,
                             self.queue.replay_rows, self.queue.replay_window_s)  # fmt: skip
            if self.queue.receipts and self._connected.is_set():
                p.resend = self.receipts.plan(int(time.time() * 1000), time.monotonic()) or p.resend
            self._fill(p)
            self._settle(p, done)
            self.inflight_messages = len(p.inflight)
            # recomputed from what is in flight or settling (fetch only raises it): a row that is off the wire but
            # still queued (its batch rejected, its delete failed) must come under the bounds again; replays and
            # re-sends do not count, their rows are not in the readings table
            self.queue.inflight_upto = max([*(f.last_id for f in p.inflight.values() if f.kind == "new"),
                                            *(s.last_id for s in p.settling.values()), 0])  # fmt: skip
            if self._connected.is_set() and time.monotonic() >= self._status_due:
                self._status_due = time.monotonic() + m.status_interval_s
                self.client.publish(
                    mqtt.status_topic(self._site, self._gw), self._status_payload(True), qos=1, retain=True
                )
            if self._draining.is_set() and (not p.inflight or not self._connected.is_set()):
                # a clean stop: every batch handed out has its PUBACK applied to the queue, so the next start does
                # not publish it again (or the connection is gone, and with it any hope of those PUBACKs)
                self._stop.set()
        if p.settling:  # stopping: what waits for its receipt is kept as sent rows, not sent again next start
            self._settle(p, _Done(), final=True)

    def _take_pubacks(self, p: _PumpState, done: _Done) -> None:
        while True:
            try:
                mid, failed = self._acks.get_nowait()
            except Empty:
                return
            f = p.inflight.pop(mid, None)
            if f is None:
                # not a batch of this pump: status, device info, config result, or a batch of a pump that failed
                # (whose rows this one sends again from the first queued row)
                continue
            if failed:
                self.stats.error("mqtt_puback")
            else:
                self.stats.inc("messages_acked")
            if f.kind == "replay":
                # a failed one is not retried: these rows reached the broker once (that PUBACK moved them to the
                # replay window) and replay only insures against a crash; their window runs on from that PUBACK
                if not failed:
                    done.replayed.append((f.first_id, f.last_id))
                continue
            if f.kind == "resend":  # re-tagged when fetched: a failed one waits for the next re-send, like any
                continue
            outcome = p.early.pop(f.batch_id, None)
            if failed:
                # rewind rather than re-publish this one batch: later batches still in flight go out again too,
                # but duplicates are identical and deduped downstream, and the cursor stays a single number
                p.cursor = min(p.cursor, f.first_id - 1)
                continue
            self.stats.inc("readings_published", f.readings)
            if outcome == "stored":  # its receipt came first: the rows never need keeping
                done.stored_now(f.first_id, f.last_id, int(time.time() * 1000))
            elif outcome is None and f.batch_id and self.queue.receipts:
                p.settling[f.batch_id] = _Settling(f.first_id, f.last_id, time.monotonic() + SETTLE_S,
                                                   int(time.time() * 1000))  # fmt: skip
            else:
                done.move(f.first_id, f.last_id, f.batch_id)
                if outcome is not None:  # dead-lettered before its PUBACK: counted by the confirmation after the move
                    done.confirm(f.batch_id, outcome)

    def _take_receipts(self, p: _PumpState, done: _Done) -> None:
        received = self.receipts.drain()
        if not received:
            return
        if not self.queue.receipts:
            try:
                self.queue.set_receipts(True)
            except QueueError as exc:  # stays in the replay-window mode; the next receipt tries again
                self.stats.error("queue_delete")
                log.error("%s", exc)
            else:
                log.info("the backend sends end-to-end receipts: readings are now kept until it confirms them")
        waiting = {f.batch_id for f in p.inflight.values() if f.kind == "new"}
        for batch_id, outcome in received:
            if batch_id in waiting:
                p.early[batch_id] = outcome
                continue
            settling = p.settling.pop(batch_id, None)
            if settling is not None and outcome == "stored":
                done.stored_now(settling.first_id, settling.last_id, settling.acked_ms)
                continue
            if settling is not None:  # dead-lettered: moved, then counted by the confirmation like any
                done.move(settling.first_id, settling.last_id, batch_id)
            done.confirm(batch_id, outcome)

    def _fill(self, p: _PumpState) -> None:
        """Hand batches to paho up to ``max_inflight``: the replay pass, then re-sends, then unsent rows."""
        m = self.settings.mqtt
        # Nothing is handed to paho while disconnected: paho would hold it (its queue is unbounded) and rows
        # handed out are exempt from drop-oldest and expiry, so an outage would leave the bounds unenforced.
        while (self._connected.is_set() and len(p.inflight) < m.max_inflight and not self._stop.is_set()
               and not self._draining.is_set()):  # fmt: skip
            # replay and re-sends first: their rows were committed before the unsent ones (but for a rejected
            # batch's), so readings keep arriving oldest first
            batch_id = ""
            kind: Literal["new", "replay", "resend"]
            if p.replay_cursor < p.replay_upto:
                kind = "replay"
                batch = self.queue.fetch_replay(p.replay_cursor, p.replay_upto, m.batch_size)
                if batch is None:  # the rest of the pass was pruned or trimmed meanwhile
                    p.replay_cursor = p.replay_upto
                    continue
            elif p.resend:
                kind, batch_id = "resend", self.receipts.next_id()
                batch = self._fetch_resend(p, batch_id)
                if batch is None:
                    continue
            else:
                kind, batch_id = "new", self.receipts.next_id()
                batch = self.queue.fetch(p.cursor, m.batch_size, hand_out=True)
                if batch is None:
                    break
            payload = batch_payload(self._site, self._gw, batch.payloads, int(time.time() * 1000), batch_id)
            info = self.client.publish(self._topic, payload, qos=1)
            # NO_CONN (the connection dropped since the check above) still queued the message in paho, which
            # sends it after reconnecting: it is in flight. Any other error queued nothing: the cursors stay,
            # so the next wake fetches the same rows again (a re-send's rows wait for the next one).
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                self.stats.error("mqtt_publish")
                break
            n = len(batch.payloads)
            p.inflight[info.mid] = _Flight(batch.first_id, batch.last_id, n, kind, batch_id)
            if kind == "replay":
                p.replay_cursor = batch.last_id
                self.stats.inc("readings_replayed", n)
            elif kind == "resend":
                self.stats.inc("resends")
                self.stats.inc("readings_resent", n)
            else:
                p.cursor = batch.last_id
            self.stats.inc("messages_sent")

    def _fetch_resend(self, p: _PumpState, batch_id: str) -> Batch | None:
        """The next batch of the re-send plan, re-tagged ``batch_id`` (None: this step of the plan is done)."""
        step = p.resend[0]
        try:
            batch = self.queue.fetch_due(step.cut_ms, self.settings.mqtt.batch_size, batch_id, int(time.time() * 1000))
        except QueueError as exc:
            self.stats.error("queue_delete")
            log.error("%s (tried again at the next check)", exc)
            batch = None
        if batch is None or step.batches <= 1:
            p.resend.pop(0)
        else:
            p.resend[0] = step._replace(batches=step.batches - 1)
        if batch is not None and step.probe:
            self.receipts.probed(time.monotonic())
        return batch

    def _settle(self, p: _PumpState, done: _Done, *, final: bool = False) -> None:
        """Move PUBACKed rows to the sent rows, delete confirmed ones, end replay windows (one transaction each)."""
        now = time.monotonic()
        for batch_id, settling in list(p.settling.items()):  # in PUBACK order
            if settling.until > now and not final:
                break
            del p.settling[batch_id]
            done.move(settling.first_id, settling.last_id, batch_id)
        # after refilling the in-flight window, so the broker is busy while SQLite works; no window ends while a
        # replay pass is running or awaiting PUBACKs (its rows get a new window on their PUBACK)
        replaying = p.replay_cursor < p.replay_upto or any(f.kind == "replay" for f in p.inflight.values())
        if done.stored_ranges:
            try:
                gone = self.queue.delete(done.stored_ranges, stored=True)
            except QueueError as exc:
                self.stats.error("queue_delete")
                log.error("%s (the rows will be sent again)", exc)
            else:
                self.receipts.confirmed(done.newest_stored_ms, int(time.time() * 1000))
                self.stats.inc("readings_confirmed", gone)
        if done.ranges:
            try:
                self.queue.delete(done.ranges, prune=not replaying, batches=done.batches)
            except QueueError as exc:
                self.stats.error("queue_delete")
                log.error("%s (the rows will be sent again)", exc)
        elif (
            self._connected.is_set() and not replaying and not self.queue.receipts and self.queue.replay_rows
            and time.monotonic() >= p.prune_due
        ):  # idle: end the windows that ran out (a busy pump does it with every delete)
            p.prune_due = time.monotonic() + 1.0  # at most once a second: each prune is a write transaction
            try:
                self.queue.prune_replay(int(time.time() * 1000))
            except QueueError as exc:
                self.stats.error("queue_delete")
                log.error("%s", exc)
        if done.stored or done.refused:
            try:
                c = self.queue.confirm(done.stored, done.refused)
            except QueueError as exc:
                self.stats.error("queue_delete")
                log.error("%s (the rows will be sent again)", exc)
            else:
                self.receipts.confirmed(c.newest_sent_ms, int(time.time() * 1000))
                self.stats.inc("readings_confirmed", c.stored)
                self.stats.inc("receipt_ids_stale", c.stale)
        if done.replayed:
            try:
                self.queue.refresh_replay(done.replayed)
            except QueueError as exc:
                self.stats.error("queue_delete")
                log.error("%s", exc)


@dataclass(slots=True)
class _PumpState:
    """One pump run's state (a pump restarted after a failure starts afresh from the first queued row)."""

    seen_requests: int
    cursor: int = 0
    inflight: dict[int, _Flight] = field(default_factory=dict)
    """mid -> the batch paho is sending."""
    early: dict[str, Outcome] = field(default_factory=dict)
    """Receipts that came before their batch's PUBACK, by batch id."""
    settling: dict[str, _Settling] = field(default_factory=dict)
    """PUBACKed batches whose rows wait in the queue for their receipt, by batch id, in PUBACK order."""
    resend: list[Resend] = field(default_factory=list)
    replay_cursor: int = 0
    replay_upto: int = 0
    prune_due: float = 0.0


@dataclass(slots=True)
class _Done:
    """What one pump iteration learnt: ranges to move to the sent rows (with their batch ids), ranges stored before
    they were moved, and receipted batch ids."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    stored_ranges: list[tuple[int, int]] = field(default_factory=list)
    newest_stored_ms: int = 0
    replayed: list[tuple[int, int]] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def move(self, first_id: int, last_id: int, batch_id: str) -> None:
        self.ranges.append((first_id, last_id))
        self.batches.append(batch_id)

    def stored_now(self, first_id: int, last_id: int, acked_ms: int) -> None:
        """A batch the backend stored while its rows were still in the queue: they are deleted where they are."""
        self.stored_ranges.append((first_id, last_id))
        self.newest_stored_ms = max(self.newest_stored_ms, acked_ms)

    def confirm(self, batch_id: str, outcome: Outcome) -> None:
        (self.stored if outcome == "stored" else self.refused).append(batch_id)
