"""End-to-end receipts, the gateway's side: names each uplink batch, takes the backend's receipts, and decides what
to send again.

Why: the broker's PUBACK does not make a reading durable. Mosquitto comes back from a crash with its last autosave,
a client that joined the backend's share group (or an ACL that hides a topic from the backend) makes a PUBACKed
message vanish, and a time-based replay window cannot know how long to wait. So the gateway keeps a reading until
the backend says, on ``cds/v1/{site}/{gateway}/down/receipts`` (protocol/mqtt.py), that the batch carrying it is in
InfluxDB or was dead-lettered; storage is idempotent, so sending a reading again costs only traffic.

Batch ids are ``<run>-<n>``: a random 64-bit token drawn at every start and a counter. An id is never used twice,
not after a restart (new token) and not after the queue file was replaced or restored from a backup (its tags
belong to runs whose tokens will not come again), and every transmission gets a new one, re-sends included; the
queue tags each row with the id of its latest transmission (gateway/sent.py). A receipt therefore deletes only rows
that travelled in the message it answers, which the backend has stored: a late receipt of an earlier send finds
nothing to delete once the rows were sent again (they wait for the newer id), and a re-sent batch is confirmed by
its own id.

Mode: until the first receipt the gateway keeps the replay-window behaviour (an older backend sends none); the
first receipt switches the queue to receipts mode for good (persisted), so a backend that is down for a while never
makes the gateway forget readings on a timer. ``queue.receipt_timeout_s = 0`` turns receipts off: batches carry no
id and the replay window stays in force.

What is sent again in receipts mode, oldest first:

- *overtaken* rows: sent before a batch that the backend confirmed at least ``receipt_timeout_s`` ago. The backend
  works, so they were lost on the way (a broker crash after the PUBACK, a share-group member that is not a backend);
  all of them go again at once. The confirmation must be that old because parallel writers and replicas confirm
  slightly out of order.
- otherwise a *probe*: when nothing newer was confirmed (the backend is down, or everything is lost), one batch of
  rows older than ``receipt_timeout_s``, the interval doubling up to ``PROBE_BACKOFF_MAX`` timeouts while no receipt
  comes. A backend that is merely down gets its copies from the broker's session queue when it returns; flooding
  that queue with copies of every unconfirmed reading would only make it overflow. Once the probe (or anything else)
  is confirmed, what is older is overtaken and goes at once.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import deque
from queue import Empty, SimpleQueue
from typing import Final, Literal, NamedTuple

import msgspec

from gateway.stats import Stats
from protocol import mqtt

log = logging.getLogger(__name__)

Outcome = Literal["stored", "dead_lettered"]

PROBE_BACKOFF_MAX: Final = 32
"""A probe goes at most every ``PROBE_BACKOFF_MAX`` x ``receipt_timeout_s`` (32 min with the default 60 s)."""
CHECK_INTERVAL_S: Final = 1.0
"""How often the pump looks for rows to send again (each look is a query on the sent rows)."""


class Resend(NamedTuple):
    """One step of a re-send plan: rows last sent before ``cut_ms``, at most ``batches`` batches."""

    cut_ms: int
    batches: int
    probe: bool


class Receipts:
    """Receipt bookkeeping of one gateway run. :meth:`deliver` is called on paho's thread, the rest on the pump's."""

    def __init__(self, timeout_s: float, stats: Stats) -> None:
        self.enabled = timeout_s > 0
        self.timeout_ms = int(timeout_s * 1000)
        self.last_receipt_ms = 0
        """Wall-clock time of the last receipt this run (0: none yet)."""
        self._stats = stats
        self._run = secrets.token_urlsafe(8)
        self._ids = itertools.count(1)
        self._inbox: SimpleQueue[mqtt.Receipt] = SimpleQueue()
        self._confirmations: deque[tuple[int, int]] = deque()
        """(wall ms when seen, newest send time confirmed), growing in both; the overtaken rule reads the newest
        entry that is at least a timeout old."""
        self._probe_every_s = timeout_s
        self._probe_at = 0.0
        self._check_at = 0.0

    def next_id(self) -> str:
        """The id of the next transmission; empty with receipts off (the backend then sends no receipt)."""
        return f"{self._run}-{next(self._ids)}" if self.enabled else ""

    def deliver(self, payload: bytes) -> None:
        """A message on the receipts topic (paho's thread): decoded and left for the pump."""
        try:
            receipt = mqtt.receipt_decoder.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for invalid UTF-8
            self._stats.error("receipt_invalid")
            log.warning("undecodable receipt ignored: %s", exc)
            return
        self._inbox.put(receipt)

    def drain(self) -> list[tuple[str, Outcome]]:
        """Every batch id received since the last call, with what the backend did with it."""
        out: list[tuple[str, Outcome]] = []
        messages = 0
        while True:
            try:
                receipt = self._inbox.get_nowait()
            except Empty:
                break
            messages += 1
            out += [(batch_id, "stored") for batch_id in receipt.stored]
            out += [(batch_id, "dead_lettered") for batch_id in receipt.dead_lettered]
        if messages:
            self._stats.inc("receipts", messages)
            self.last_receipt_ms = int(time.time() * 1000)
            self._probe_every_s = self.timeout_ms / 1000  # the backend answers: probing starts from the short delay
        return out

    def confirmed(self, newest_sent_ms: int, now_ms: int) -> None:
        """A receipt deleted rows last sent at ``newest_sent_ms`` (0: it deleted nothing)."""
        if newest_sent_ms > (self._confirmations[-1][1] if self._confirmations else 0):
            self._confirmations.append((now_ms, newest_sent_ms))

    def plan(self, now_ms: int, now_mono: float) -> list[Resend]:
        """What to look for now (at most once per ``CHECK_INTERVAL_S``): overtaken rows, then maybe a probe."""
        if now_mono < self._check_at:
            return []
        self._check_at = now_mono + CHECK_INTERVAL_S
        settled = now_ms - self.timeout_ms
        confirmations = self._confirmations
        while len(confirmations) > 1 and confirmations[1][0] <= settled:
            confirmations.popleft()  # keep the newest entry that is old enough, and the younger ones
        steps = []
        if confirmations and confirmations[0][0] <= settled:
            steps.append(Resend(confirmations[0][1], 1 << 30, probe=False))
        if now_mono >= self._probe_at:
            steps.append(Resend(settled, 1, probe=True))
        return steps

    def probed(self, now_mono: float) -> None:
        """A probe batch went out: the next one waits twice as long, up to the cap, unless a receipt comes."""
        self._probe_at = now_mono + self._probe_every_s
        self._probe_every_s = min(self._probe_every_s * 2, PROBE_BACKOFF_MAX * self.timeout_ms / 1000)
