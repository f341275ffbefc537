"""The notifier's durable state: one SQLite file (WAL) in its state directory, and the retry schedule.

What it holds, and why each piece must survive ``kill -9``:

- ``site_state``: the open alerts of every site (and of every user's budget), so a restarted notifier that
  receives the retained lists again opens nothing twice and resolves what closed while it was away;
- ``event``: every transition, written in the *same transaction* as the state that produced it, so a crash never
  leaves a state change without its event; ``routed`` says whether its deliveries exist yet (routing needs the
  preferences from InfluxDB, which may be down);
- ``delivery``: one row per (event, user, channel) with its status, attempts, next attempt time and last error.
  A delivery is marked ``delivered`` only after the receiver accepted it. An attempt is recorded *before* the
  send (attempts + 1, next attempt pushed back by the backoff), so a notifier killed in mid-send tries again
  after the backoff, not in a tight crash loop: at least once, never lost. A receiver may therefore get a
  message twice, always with the same delivery id to drop it by; a delivered one is never sent again.
- ``dirty`` marks rows whose record in InfluxDB (what ``/entregas`` shows) is behind; they are written there
  whenever InfluxDB answers.

Why SQLite and not InfluxDB: this is one process's work queue, updated several times per message and read by
"what is due now", which InfluxDB does badly and without transactions. Only one notifier may own the file:
:func:`lock_state_dir` takes an exclusive ``flock`` on the directory's lock file, and a second instance refuses to
start. The file and its directory are private (0600 / 0700): they hold webhook URLs and addresses.

The retry schedule is :func:`retry_delay_ms`, exponential with "equal jitter": the n-th failure waits between
half and all of ``base × 2^(n-1)`` (capped), so a receiver coming back is not hit by every queued delivery at the
same instant. It is a pure function of the attempt and a random number rather than tenacity's in-memory retry
loop, because the wait must survive a restart: the due time is a column, not a sleeping coroutine.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal

import msgspec

from backend.errors import ConfigError
from backend.notify.preferences import Canal
from backend.notify.routing import Delivery
from backend.notify.transitions import Event, SiteState

Status = Literal["pendente", "entregue", "falhou"]
DB_NAME: Final = "outbox.sqlite3"
LOCK_NAME: Final = "lock"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS site_state (key TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS event (id TEXT PRIMARY KEY, event BLOB NOT NULL, routed INTEGER NOT NULL DEFAULT 0,
                                  created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS delivery (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, channel BLOB NOT NULL, event BLOB NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, last_error TEXT NOT NULL
    DEFAULT '', created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, dirty INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS delivery_due ON delivery (status, next_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class NotifierRunning(ConfigError):
    """Another notifier holds the state directory."""


class Row(msgspec.Struct, frozen=True):
    """A delivery as stored."""

    id: str
    username: str
    channel: Canal
    event: Event
    status: Status
    attempts: int
    next_ms: int
    last_error: str
    created_ms: int
    updated_ms: int


def retry_delay_ms(attempts: int, base_ms: int, max_ms: int, rand: float) -> int:
    """Wait after the ``attempts``-th failed attempt (1, 2, ...): ``d = min(max_ms, base_ms × 2^(attempts-1))``,
    then ``d/2 + rand × d/2`` with ``rand`` in [0, 1)."""
    d = min(max_ms, base_ms * 2 ** min(max(attempts - 1, 0), 30))
    return int(d / 2 + rand * d / 2)


def lock_state_dir(folder: Path) -> int:
    """Create ``folder`` (0700) and hold an exclusive lock on it for this process's life; the file descriptor
    is returned (closing it releases the lock, as does the process's death, ``kill -9`` included)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise NotifierRunning(f"another notifier is running on {folder}") from exc
    return fd


_enc: Final = msgspec.json.Encoder()
_state: Final = msgspec.json.Decoder(SiteState)
_event: Final = msgspec.json.Decoder(Event)
_channel: Final = msgspec.json.Decoder(Canal)


class Outbox:
    """The state file; every method is one short transaction (called from the event loop: microseconds)."""

    def __init__(self, folder: Path) -> None:
        path = folder / DB_NAME
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a delivered mark must survive a power cut, not only kill -9
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- transitions ---------------------------------------------------------------------------------------

    def state(self, key: str) -> SiteState | None:
        row = self._db.execute("SELECT state FROM site_state WHERE key = ?", (key,)).fetchone()
        return _state.decode(row[0]) if row else None

    def apply(self, key: str, state: SiteState, events: list[Event], now_ms: int) -> None:
        """Store a site's new state together with the events that led to it."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO site_state (key, state) VALUES (?, ?)", (key, _enc.encode(state)))
            db.executemany("INSERT OR IGNORE INTO event (id, event, created_ms) VALUES (?, ?, ?)",
                           [(e.id, _enc.encode(e), now_ms) for e in events])

    def add_requested(self, events: list[Event], mark_key: str, mark_ms: int, now_ms: int) -> None:
        """Store events users asked for (test messages) and how far their requests were read, at once."""
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO event (id, event, created_ms) VALUES (?, ?, ?)",
                           [(e.id, _enc.encode(e), now_ms) for e in events])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (mark_key, mark_ms))

    def unrouted(self) -> list[Event]:
        return [_event.decode(r[0]) for r in
                self._db.execute("SELECT event FROM event WHERE routed = 0 ORDER BY created_ms, id")]

    def route(self, event_id: str, deliveries: list[Delivery], now_ms: int) -> None:
        """Queue an event's deliveries and mark it routed, at once (a delivery that exists is kept as it is)."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO delivery (id, username, channel, event, status, next_ms, created_ms, "
                "updated_ms) VALUES (?, ?, ?, ?, 'pendente', ?, ?, ?)",
                [(d.id, d.username, _enc.encode(d.channel), _enc.encode(d.event), d.due_ms, now_ms, now_ms)
                 for d in deliveries])
            db.execute("UPDATE event SET routed = 1 WHERE id = ?", (event_id,))

    # --- deliveries ----------------------------------------------------------------------------------------

    def due(self, now_ms: int, limit: int) -> list[Row]:
        return self._rows("WHERE status = 'pendente' AND next_ms <= ? ORDER BY next_ms, id LIMIT ?", (now_ms, limit))

    def next_due_ms(self) -> int | None:
        row = self._db.execute("SELECT min(next_ms) FROM delivery WHERE status = 'pendente'").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def pending(self) -> int:
        """Deliveries neither delivered nor given up (queued, held by quiet hours, in flight or awaiting a retry)."""
        return int(self._db.execute("SELECT count(*) FROM delivery WHERE status = 'pendente'").fetchone()[0])

    def get(self, delivery_id: str) -> Row | None:
        rows = self._rows("WHERE id = ?", (delivery_id,))
        return rows[0] if rows else None

    def begin_attempt(self, delivery_id: str, now_ms: int, retry_at_ms: int) -> int:
        """Count an attempt about to start and push its retry time back (see the module's note); returns the
        attempt's number."""
        with self._tx() as db:
            db.execute("UPDATE delivery SET attempts = attempts + 1, next_ms = ?, updated_ms = ?, dirty = 1 "
                       "WHERE id = ?", (retry_at_ms, now_ms, delivery_id))
            row = db.execute("SELECT attempts FROM delivery WHERE id = ?", (delivery_id,)).fetchone()
        return int(row[0])

    def finish(self, delivery_id: str, status: Status, now_ms: int, error: str = "") -> None:
        """Record an attempt's outcome: ``entregue``, ``falhou`` (given up), or ``pendente`` with its error (the
        retry time set by :meth:`begin_attempt` stands)."""
        with self._tx() as db:
            db.execute("UPDATE delivery SET status = ?, last_error = ?, updated_ms = ?, dirty = 1 WHERE id = ?",
                       (status, error[:500], now_ms, delivery_id))

    def dirty(self, limit: int = 500) -> list[Row]:
        return self._rows("WHERE dirty = 1 ORDER BY updated_ms LIMIT ?", (limit,))

    def cleaned(self, rows: list[Row]) -> None:
        """Mark rows as written to InfluxDB, unless they changed since they were read."""
        with self._tx() as db:
            db.executemany("UPDATE delivery SET dirty = 0 WHERE id = ? AND updated_ms = ? AND status = ? "
                           "AND attempts = ?", [(r.id, r.updated_ms, r.status, r.attempts) for r in rows])

    def _rows(self, where: str, args: tuple[object, ...]) -> list[Row]:
        cur = self._db.execute("SELECT id, username, channel, event, status, attempts, next_ms, last_error, "
                               f"created_ms, updated_ms FROM delivery {where}", args)
        return [Row(id=r[0], username=r[1], channel=_channel.decode(r[2]), event=_event.decode(r[3]), status=r[4],
                    attempts=r[5], next_ms=r[6], last_error=r[7], created_ms=r[8], updated_ms=r[9]) for r in cur]

    def mark(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0
