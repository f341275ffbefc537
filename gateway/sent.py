"""What happens to a reading after the broker PUBACKed it: the sent rows of the queue file.

A PUBACKed row is not deleted but moved to the ``replay`` table (named when a replay window was its only use;
in receipts mode the forwarder first waits a moment for the receipt, which usually comes and spares the move),
tagged with the id of the uplink batch that carried it (:attr:`protocol.mqtt.ReadingBatch.batch_id`), because a
PUBACK does not make a reading durable: Mosquitto comes back from a crash with its last autosave, and a message it
PUBACKed may have gone to a share-group member that is not a backend. How a sent row leaves the table depends on
the mode, persisted in ``meta`` (:attr:`SentRows.receipts`):

- *receipts* (the backend has sent at least one end-to-end receipt): only when a receipt names its batch
  (:meth:`SentRows.confirm`) — the backend has it in InfluxDB or dead-lettered it — or when a bound trims it.
  Rows unconfirmed too long are sent again under a fresh batch id (:meth:`SentRows.fetch_due`, re-tagged in
  the same transaction), so a late receipt of the earlier send no longer matches them; see gateway/receipts.py.
- *replay window* (no receipt seen yet: an older backend, or receipts turned off): ``replay_window_s`` seconds
  after its PUBACK, as before receipts existed; the forwarder re-publishes the window after every (re)connection
  (see gateway/forwarder.py). With ``replay_window_s`` = 0 rows are deleted on PUBACK.

Sent rows are not "queued": they are left out of ``rows``/``bytes``/``oldest_ts`` (the unsent figures) and never
block a new reading — they count against ``max_rows``/``max_bytes`` together with the unsent rows, and every
commit that would exceed a bound deletes the oldest sent rows first, under either policy, counted (persisted) as
``unconfirmed_trimmed`` in receipts mode (those readings may not be stored) or ``replay_trimmed`` in the replay
window mode (only the crash insurance is lost). Only then does ``drop-oldest`` touch unsent rows.

The changes here are made by the forwarder's thread, on its own connection (``synchronous=NORMAL``: a lost delete
only means a reading is sent again), each in one transaction of the queue's ``_transaction`` helper.
:class:`gateway.queue.DurableQueue` provides the file, the connections and the figures, and inherits this.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

ROW_OVERHEAD = 64
"""Bytes counted per row on top of its payload (rowid, key columns, b-tree cell)."""


class Batch(NamedTuple):
    """Consecutive queued rows ``first_id..last_id`` (inclusive) and their payloads, oldest first."""

    first_id: int
    last_id: int
    payloads: list[bytes]


class Confirmation(NamedTuple):
    """What one :meth:`SentRows.confirm` deleted."""

    stored: int
    """Rows of batches the backend stored."""
    dead_lettered: int
    """Rows of batches the backend refused and dead-lettered."""
    stale: int
    """Batch ids that matched no row: a late receipt of a send whose rows were sent again since (they wait for
    the newer id), a duplicate receipt, or rows already trimmed."""
    newest_sent_ms: int
    """The latest ``acked_at`` (PUBACK or re-send time) among the deleted rows; 0 when none."""


class SentRows:
    """The sent-rows half of :class:`gateway.queue.DurableQueue` (a base class: it owns no connection)."""

    # provided by DurableQueue
    replay_window_s: float
    counters: dict[str, int]
    _lock: threading.Lock
    _receipts: bool
    _replay_rows: int
    _replay_bytes: int
    _reader: Callable[[], sqlite3.Connection]
    _transaction: Callable[[sqlite3.Connection, str], contextlib.AbstractContextManager[None]]
    _forget: Callable[[int, int], None]

    @property
    def replay_rows(self) -> int:
        """Sent rows kept until confirmed or for the replay window (not part of :attr:`rows`)."""
        return self._replay_rows

    @property
    def replay_bytes(self) -> int:
        return self._replay_bytes

    @property
    def receipts(self) -> bool:
        """Receipts mode: the backend has confirmed a batch once, so sent rows wait for its receipts."""
        return self._receipts

    def set_receipts(self, on: bool) -> None:
        """Enter receipts mode (the backend sent one) or leave it (receipts turned off); persisted."""
        conn = self._reader()
        with self._transaction(conn, "receipts mode"):
            if on:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('receipts', 1)")
            else:
                conn.execute("DELETE FROM meta WHERE name = 'receipts'")
        self._receipts = on

    def _forget_replay(self, rows: int, size: int) -> None:
        with self._lock:
            self._replay_rows -= rows
            self._replay_bytes -= size + rows * ROW_OVERHEAD

    def delete(
        self, ranges: Sequence[tuple[int, int]], now_ms: int | None = None, *, prune: bool = True,
        batches: Sequence[str] = (), stored: bool = False,
    ) -> int:  # fmt: skip
        """Take rows in the inclusive id ranges (PUBACKed batches) out of the queue in one transaction; returns how
        many.

        In receipts mode, or with a replay window, the rows move to the ``replay`` table (stamped ``now_ms``, default
        now), tagged ``batches[i]`` for ``ranges[i]`` (the batch id the receipt will name; untagged when missing);
        otherwise, or when ``stored`` (the backend's receipt for exactly these batches came before their rows were
        moved), they are deleted. With a replay window and ``prune``, sent rows whose window has ended are deleted
        in the same transaction. Only the forwarder prunes, while connected and not replaying: a window must not run
        out while the broker is unreachable."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        keep = not stored and (self.replay_window_s > 0 or self._receipts)
        conn = self._reader()
        lens: list[tuple[int]] = []
        pruned: list[tuple[int]] = []
        with self._transaction(conn, "delete"):
            for i, (lo, hi) in enumerate(ranges):
                if keep:
                    conn.execute(
                        "INSERT OR REPLACE INTO replay (id, payload, acked_at, batch) "
                        "SELECT id, payload, ?, ? FROM readings WHERE id BETWEEN ? AND ?",
                        (now, batches[i] if i < len(batches) else "", lo, hi),
                    )
                lens += conn.execute(
                    "DELETE FROM readings WHERE id BETWEEN ? AND ? RETURNING length(payload)", (lo, hi)
                ).fetchall()
            if keep and prune:
                pruned = self._prune(conn, now)
        size = sum(x for (x,) in lens)
        self._forget(len(lens), size)
        if keep:  # the moved rows join the replay figures, the pruned ones leave them
            self._forget_replay(len(pruned) - len(lens), sum(x for (x,) in pruned) - size)
        return len(lens)

    def _prune(self, conn: sqlite3.Connection, now_ms: int) -> list[tuple[int]]:
        if self._receipts:  # in receipts mode only a receipt (or a bound) ends a sent row, never the clock
            return []
        cutoff = now_ms - int(self.replay_window_s * 1000)
        return conn.execute("DELETE FROM replay WHERE acked_at < ? RETURNING length(payload)", (cutoff,)).fetchall()

    def confirm(self, stored: Iterable[str], dead_lettered: Iterable[str]) -> Confirmation:
        """Delete the sent rows of the batches a receipt names, in one transaction; count the dead-lettered ones
        (persisted). Only rows tagged with exactly these ids go: the rows that travelled in those messages."""
        conn = self._reader()
        counts = {"stored": 0, "dead": 0}
        size = stale = newest = 0
        with self._transaction(conn, "confirm"):
            for outcome, ids in (("stored", stored), ("dead", dead_lettered)):
                for batch_id in ids:
                    if not batch_id:  # untagged rows belong to no receipt
                        continue
                    gone = conn.execute(
                        "DELETE FROM replay WHERE batch = ? RETURNING length(payload), acked_at", (batch_id,)
                    ).fetchall()
                    stale += not gone
                    counts[outcome] += len(gone)
                    size += sum(n for n, _ in gone)
                    newest = max([newest, *(t for _, t in gone)])
            if counts["dead"]:
                conn.execute(
                    "INSERT INTO counters VALUES ('dead_lettered', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (counts["dead"],),
                )
        self.counters["dead_lettered"] += counts["dead"]
        self._forget_replay(counts["stored"] + counts["dead"], size)
        return Confirmation(counts["stored"], counts["dead"], stale, newest)

    def fetch_due(self, sent_before_ms: int, limit: int, batch_id: str, now_ms: int) -> Batch | None:
        """The oldest ``limit`` sent rows last sent before ``sent_before_ms``, re-tagged ``batch_id`` and stamped
        ``now_ms`` in the same transaction (so the next call does not pick them again, and a late receipt of their
        earlier send no longer matches them); None when there are none."""
        conn = self._reader()
        if conn.execute("SELECT 1 FROM replay WHERE acked_at < ? LIMIT 1", (sent_before_ms,)).fetchone() is None:
            return None  # the common case, without taking the write lock
        with self._transaction(conn, "re-send"):
            rows = conn.execute(
                "UPDATE replay SET batch = ?, acked_at = ? WHERE id IN "
                "(SELECT id FROM replay WHERE acked_at < ? ORDER BY acked_at, id LIMIT ?) RETURNING id, payload",
                (batch_id, now_ms, sent_before_ms, limit),
            ).fetchall()
        if not rows:
            return None
        rows.sort()
        return Batch(rows[0][0], rows[-1][0], [p for _, p in rows])

    def prune_replay(self, now_ms: int) -> int:
        """Delete replay rows PUBACKed more than ``replay_window_s`` before ``now_ms``; returns how many."""
        conn = self._reader()
        with self._transaction(conn, "replay prune"):
            pruned = self._prune(conn, now_ms)
        self._forget_replay(len(pruned), sum(x for (x,) in pruned))
        return len(pruned)

    def replay_upto(self) -> int:
        """Highest id in the replay window right now (0 when empty): a replay pass re-publishes up to here."""
        row = self._reader().execute("SELECT max(id) FROM replay").fetchone()
        return int(row[0] or 0)

    def fetch_replay(self, after_id: int, upto_id: int, limit: int) -> Batch | None:
        """The next ``limit`` replay rows with ``after_id`` < id <= ``upto_id``, oldest first; None when none."""
        sql = "SELECT id, payload FROM replay WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
        rows = self._reader().execute(sql, (after_id, upto_id, limit)).fetchall()
        if not rows:
            return None
        return Batch(rows[0][0], rows[-1][0], [p for _, p in rows])

    def refresh_replay(self, ranges: Iterable[tuple[int, int]], now_ms: int | None = None) -> None:
        """Replayed rows were PUBACKed again: their window restarts (the broker may crash again before saving)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        conn = self._reader()
        with self._transaction(conn, "replay refresh"):
            for lo, hi in ranges:
                conn.execute("UPDATE replay SET acked_at = ? WHERE id BETWEEN ? AND ?", (now, lo, hi))
