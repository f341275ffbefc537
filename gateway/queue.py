"""The durable reading queue: SQLite in WAL mode, bounded, with counted overflow.

Durability (why the settings are what they are):

- ``journal_mode=WAL``: a commit appends to the ``-wal`` file; readers never block the writer, and a process killed
  at any instant (kill -9) leaves either the whole transaction or none of it — SQLite replays or discards the WAL
  tail on the next open.
- The *writer* connection (readings + progress, committed before the meter is ACKed) uses
  ``synchronous=FULL`` by default: the WAL is fsynced at every commit, so an ACKed reading also survives power
  loss. ``NORMAL`` would skip that fsync (commits survive a process crash but the last ones may vanish on power
  loss *after* the meter dropped them). Group commit makes FULL affordable: one fsync per commit window, not per
  reading.
- The *reader* connections (the forwarder deletes rows after PUBACK) use ``synchronous=NORMAL``: losing a delete
  on power loss only means those readings are sent again, which at-least-once delivery and the backend's dedupe
  by ``(device, boot, seq)`` absorb.

Bounds: ``max_rows``, ``max_bytes`` (payload + 64 bytes per row) and ``max_age``. When full, ``drop-oldest``
deletes the oldest rows in the same transaction as the insert and counts them (``dropped_full``); ``refuse-new``
admits nothing more (see :meth:`DurableQueue.room`). Both are persisted in the ``counters`` table.

Sent rows: a PUBACKed row moves to the ``replay`` table until the backend's receipt (or, without receipts, the
end of the replay window) says it may go; gateway/sent.py explains that part, which :class:`DurableQueue` inherits.
Sent rows count against ``max_rows``/``max_bytes`` together with the unsent rows, and every commit that would
exceed a bound deletes the oldest sent rows first, under either policy (counted, see gateway/sent.py). Only then
does ``drop-oldest`` touch unsent rows.

Ordering: rows are delivered in commit order (``id``, AUTOINCREMENT so ids are never reused), which is oldest
first per device — except a reading that was lost in transit and retransmitted later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from gateway.errors import QueueError
from gateway.link import Progress
from gateway.sent import ROW_OVERHEAD, Batch, SentRows

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    contiguous INTEGER NOT NULL,
    above TEXT NOT NULL,
    anchor_uptime INTEGER,
    anchor_ms INTEGER,
    dropped_at_meter INTEGER NOT NULL,
    PRIMARY KEY (device, boot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replay (
    id INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    acked_at INTEGER NOT NULL,
    batch TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS replay_acked_at ON replay (acked_at);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 3  # 2: the replay table (created in place on an older file); 3: its batch column (added in place)
PERSISTED_COUNTERS = (
    "dropped_full", "expired", "dropped_at_meter", "skipped_unknown", "replay_trimmed", "unconfirmed_trimmed",
    "dead_lettered",
)  # fmt: skip


class Row(NamedTuple):
    """One reading to queue: its identity, measured time and the JSON payload sent upstream."""

    device: str
    boot: int
    seq: int
    ts: int
    payload: bytes


class CommitResult(NamedTuple):
    inserted: int
    dropped_full: int


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    # The queue holds a household's consumption: create the file owner-only before SQLite would create it with
    # the process's umask (SQLite gives the -wal and -shm files the database file's mode). Only when it does not
    # exist yet (O_EXCL): closing a descriptor of a file releases every POSIX lock this process holds on it, so
    # opening an existing queue beside SQLite's own connections would silently drop their locks and let another
    # process read half a transaction.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise QueueError(f"cannot open queue: {exc}", path) from exc
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise QueueError(f"cannot enable WAL mode (got {mode})", path)
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA journal_size_limit=67108864")
    return conn


class DurableQueue(SentRows):
    """The queue file and its writer connection; :meth:`reader` gives per-thread read/delete connections.

    The writer (``commit``, ``expire``, ``load_progress``) must be used by one thread only — the ingest thread.
    Depth counters are shared, exact (deletes use ``RETURNING``) and safe to read from any thread.
    """

    def __init__(
        self,
        path: str,
        *,
        max_rows: int = 5_000_000,
        max_bytes: int = 1_500_000_000,
        max_age_s: float = 90 * 86400.0,
        full_policy: Literal["drop-oldest", "refuse-new"] = "drop-oldest",
        synchronous: Literal["full", "normal"] = "full",
        replay_window_s: float = 0.0,
    ) -> None:
        self.path = path
        self.replay_window_s = replay_window_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.full_policy = full_policy
        self._lock = threading.Lock()
        self._local = threading.local()
        self._peek: sqlite3.Connection | None = None
        self._peek_lock = threading.Lock()
        self._handout = threading.Lock()
        self.inflight_upto = 0
        """Rows with id <= this were handed to the MQTT client and may be on the wire: the bounds and the age
        limit never delete them (their PUBACK will), so a reading counted as dropped is never delivered after all.
        Set by the forwarder; the in-flight window (max_inflight x batch_size rows) may exceed ``max_rows``."""
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._db = self._open(synchronous)
        except sqlite3.DatabaseError as exc:
            # OperationalError is about access (permissions, a lock, a missing directory), not the content: moving
            # the file aside would throw away a good queue
            if isinstance(exc, sqlite3.OperationalError):
                raise QueueError(f"cannot open queue: {exc}", path) from exc
            aside = f"{path}.corrupt-{int(time.time())}"
            log.error("queue file %s is corrupt (%s); moved aside to %s, starting empty", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                if Path(path + suffix).exists():
                    Path(path + suffix).rename(aside + suffix)
            self._db = self._open(synchronous)
        rows, size = self._db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM readings").fetchone()
        self._rows: int = int(rows)
        self._bytes: int = int(size) + int(rows) * ROW_OVERHEAD
        rows, size = self._db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM replay").fetchone()
        self._replay_rows: int = int(rows)
        self._replay_bytes: int = int(size) + int(rows) * ROW_OVERHEAD
        self.counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        for name in PERSISTED_COUNTERS:
            self.counters.setdefault(name, 0)
        self._receipts = self._db.execute("SELECT 1 FROM meta WHERE name = 'receipts'").fetchone() is not None

    def _open(self, synchronous: str) -> sqlite3.Connection:
        db = _connect(self.path, synchronous)
        try:
            db.executescript(_SCHEMA)
            if "batch" not in {row[1] for row in db.execute("PRAGMA table_info(replay)")}:  # a version 2 file
                db.execute("ALTER TABLE replay ADD COLUMN batch TEXT NOT NULL DEFAULT ''")
            db.execute("CREATE INDEX IF NOT EXISTS replay_batch ON replay (batch)")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM readings").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, what: str) -> Iterator[None]:
        """One write transaction on ``conn``: committed when the block ends, rolled back if anything in it raises.

        sqlite3 errors (from BEGIN, the block, COMMIT or ROLLBACK) become ``QueueError("<what> failed: ...")``;
        any other exception propagates unchanged, after the rollback.
        """
        try:
            # IMMEDIATE takes the write lock at BEGIN, waiting up to busy_timeout while the other connection (the
            # ingest's commits vs the forwarder's deletes) holds it. A deferred transaction takes it only at its
            # first write, and where that means upgrading a read snapshot SQLite answers SQLITE_BUSY without waiting.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back by itself already (e.g. on SQLITE_FULL); a second ROLLBACK would fail
                # and hide the original error
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise QueueError(f"{what} failed: {exc}", self.path) from exc

    # --- depth ------------------------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        return self._bytes

    def room(self) -> int:
        """How many more rows fit right now. Under ``refuse-new`` the ingest admits at most this many.

        Replay rows do not count here: a commit deletes them first to make room (:meth:`_trim_replay`)."""
        with self._lock:
            by_rows = self.max_rows - self._rows
            by_bytes = (self.max_bytes - self._bytes) // (ROW_OVERHEAD + 200)
        return max(0, min(by_rows, by_bytes))

    def _forget(self, rows: int, size: int) -> None:
        with self._lock:
            self._rows -= rows
            self._bytes -= size + rows * ROW_OVERHEAD

    # --- writer (ingest thread) ---------------------------------------------------------------------------------

    def load_progress(self, device: str, boot: int) -> Progress:
        """The stored progress of one boot, or a fresh one."""
        row = self._db.execute(
            "SELECT contiguous, above, anchor_uptime, anchor_ms, dropped_at_meter FROM progress "
            "WHERE device = ? AND boot = ?",
            (device, boot),
        ).fetchone()
        if row is None:
            return Progress(device, boot)
        contiguous, above, anchor_uptime, anchor_ms, dropped = row
        return Progress(device, boot, contiguous, set(json.loads(above)), anchor_uptime, anchor_ms, dropped)

    def commit(
        self, rows: Sequence[Row], progress: Iterable[Progress] = (), counters: dict[str, int] | None = None
    ) -> CommitResult:
        """Insert ``rows`` and save ``progress`` and counter increments in ONE transaction, then return.

        Only after this returns may the meters be ACKed. Under ``drop-oldest`` the oldest rows are deleted in the
        same transaction to respect the bounds. Raises :class:`QueueError` (nothing committed) on failure.
        """
        new_bytes = sum(len(r.payload) for r in rows) + len(rows) * ROW_OVERHEAD
        dropped = 0
        dropped_bytes = 0
        trimmed = (0, 0)
        deltas = dict(counters or {})
        db = self._db
        trim = bool(rows) and self.full_policy == "drop-oldest"
        with contextlib.ExitStack() as stack:
            if trim:
                stack.enter_context(self._handout)  # no batch is fetched while we pick which rows to drop
            with self._transaction(db, "commit"):
                if rows:
                    db.executemany("INSERT INTO readings (device, boot, seq, ts, payload) VALUES (?, ?, ?, ?, ?)", rows)
                    trimmed = self._trim_replay(len(rows), new_bytes)
                if trim:
                    dropped, dropped_bytes = self._trim(len(rows), new_bytes, trimmed)
                for p in progress:
                    db.execute(
                        "INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            p.device,
                            p.boot,
                            p.contiguous,
                            json.dumps(sorted(p.above)),
                            p.anchor_uptime,
                            p.anchor_ms,
                            p.dropped_at_meter,
                        ),
                    )
                if dropped:
                    deltas["dropped_full"] = deltas.get("dropped_full", 0) + dropped
                if trimmed[0]:
                    name = "unconfirmed_trimmed" if self._receipts else "replay_trimmed"
                    deltas[name] = deltas.get(name, 0) + trimmed[0]
                for name, delta in deltas.items():
                    if delta:
                        db.execute(
                            "INSERT INTO counters VALUES (?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                            (name, delta),
                        )
        for name, delta in deltas.items():
            self.counters[name] = self.counters.get(name, 0) + delta
        for p in progress:
            p.dirty = False
        with self._lock:
            self._rows += len(rows) - dropped
            self._bytes += new_bytes - dropped_bytes - dropped * ROW_OVERHEAD
        self._forget_replay(*trimmed)
        return CommitResult(len(rows), dropped)

    def _over(self, n: int, size: int, rows_gone: int = 0, bytes_gone: int = 0) -> tuple[int, int]:
        """Rows and bytes over the bounds once ``n`` rows of ``size`` bytes are added (unsent + replay)."""
        with self._lock:
            rows = self._rows + self._replay_rows - rows_gone + n
            size_all = self._bytes + self._replay_bytes - bytes_gone - rows_gone * ROW_OVERHEAD + size
        return rows - self.max_rows, size_all - self.max_bytes

    def _trim_replay(self, n: int, size: int) -> tuple[int, int]:
        """Inside the commit: delete the oldest replay rows while the bounds are exceeded (any policy).

        Returns (rows, payload bytes) deleted; the caller counts them as ``replay_trimmed``."""
        gone = 0
        gone_bytes = 0
        while self._replay_rows - gone > 0:
            rows_over, bytes_over = self._over(n, size, gone, gone_bytes)
            if rows_over <= 0 and bytes_over <= 0:
                break
            k = max(rows_over, 1, bytes_over // (ROW_OVERHEAD + 150) + 1)
            lens = self._db.execute(
                "DELETE FROM replay WHERE id IN (SELECT id FROM replay ORDER BY acked_at, id LIMIT ?) "
                "RETURNING length(payload)",
                (k,),
            ).fetchall()
            if not lens:
                break
            gone += len(lens)
            gone_bytes += sum(x for (x,) in lens)
        return gone, gone_bytes

    def _trim(self, n: int, size: int, replay_gone: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        """Inside the commit, after inserting ``n`` rows of ``size`` bytes and trimming ``replay_gone`` replay rows:
        delete the oldest unsent rows over the bounds."""
        dropped = 0
        dropped_bytes = 0
        while True:
            rows_over, bytes_over = self._over(n, size, dropped + replay_gone[0], dropped_bytes + replay_gone[1])
            if rows_over <= 0 and bytes_over <= 0:
                return dropped, dropped_bytes
            k = max(rows_over, 1, bytes_over // (ROW_OVERHEAD + 150) + 1)
            lens = self._db.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE id > ? ORDER BY id LIMIT ?) "
                "RETURNING length(payload)",
                (self.inflight_upto, k),
            ).fetchall()
            if not lens:
                return dropped, dropped_bytes
            dropped += len(lens)
            dropped_bytes += sum(x for (x,) in lens)

    def expire(self, now_ms: int) -> int:
        """Delete readings measured more than ``max_age`` ago; count them as ``expired``."""
        cutoff = now_ms - int(self.max_age_s * 1000)
        db = self._db
        with self._handout, self._transaction(db, "expiry"):
            lens = db.execute(
                "DELETE FROM readings WHERE ts < ? AND id > ? RETURNING length(payload)",
                (cutoff, self.inflight_upto),
            ).fetchall()
            if lens:
                db.execute(
                    "INSERT INTO counters VALUES ('expired', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (len(lens),),
                )
        if lens:
            self.counters["expired"] += len(lens)
            self._forget(len(lens), sum(x for (x,) in lens))
        return len(lens)

    # --- readers (forwarder and status page threads) ------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, "normal")
            self._local.conn = conn
        return conn

    def fetch(self, after_id: int, limit: int, *, hand_out: bool = False) -> Batch | None:
        """The next ``limit`` rows with id > ``after_id``, oldest first; None when there are none.

        ``hand_out``: the rows go to the MQTT client; raise ``inflight_upto`` atomically with the read so that the
        full-queue policy cannot drop them in between.
        """
        with self._handout:
            rows = (
                self._reader()
                .execute("SELECT id, payload FROM readings WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
                .fetchall()
            )
            if not rows:
                return None
            if hand_out:
                self.inflight_upto = max(self.inflight_upto, rows[-1][0])
        return Batch(rows[0][0], rows[-1][0], [p for _, p in rows])

    def oldest_ts(self) -> int | None:
        """Measured time of the oldest queued reading (by commit order), or None when empty. Any thread."""
        with self._peek_lock:
            if self._peek is None:
                self._peek = _connect(self.path, "normal")
            row = self._peek.execute("SELECT ts FROM readings ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def mark_clean_stop(self) -> None:
        """Record that the gateway stopped cleanly (writer thread, after the ingest stopped)."""
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clean_stop', 1)")

    def take_clean_stop(self) -> bool:
        """Whether the previous run ended with :meth:`mark_clean_stop`; clears the mark (a crash leaves none)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'clean_stop'").fetchone()
        self._db.execute("DELETE FROM meta WHERE name = 'clean_stop'")
        return bool(row and row[0])

    def close(self) -> None:
        """Close the writer connection (reader connections close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        with self._peek_lock:
            if self._peek is not None:
                self._peek.close()
                self._peek = None
        self._db.close()
