"""Sent rows (gateway/sent.py) and the re-send plan (gateway/receipts.py) without a broker: a receipt deletes exactly
the rows that travelled under its batch id, a re-send re-tags them so a late receipt of the earlier send deletes
nothing, receipts mode never ends a row by the clock, its trims are counted apart, a version 2 queue file is
migrated in place, and the plan re-sends overtaken rows at once but probes a silent backend with backoff."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_gw_queue import row

from gateway.queue import SCHEMA_VERSION, DurableQueue
from gateway.receipts import Receipts, Resend
from gateway.stats import Stats
from protocol import mqtt

T0 = 1_700_000_000_000


def seqs(payloads: list[bytes]) -> list[int]:
    return [json.loads(p)["seq"] for p in payloads]


def sent(q: DurableQueue, first: int, last: int, batch_id: str, now_ms: int = T0) -> None:
    """Rows ``first..last`` (seq) handed out and PUBACKed as batch ``batch_id``."""
    b = q.fetch(first - 1, last - first + 1, hand_out=True)
    assert b is not None
    q.delete([(b.first_id, b.last_id)], now_ms=now_ms, batches=[batch_id])


def test_a_receipt_deletes_exactly_the_rows_of_its_batch_and_counts_dead_letters(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"))
    q.set_receipts(True)
    q.commit([row(s) for s in range(1, 31)])
    sent(q, 1, 10, "run-1")
    sent(q, 11, 20, "run-2")
    sent(q, 21, 30, "")  # sent without an id (receipts were off): no receipt can name it
    assert (q.rows, q.replay_rows) == (0, 30)
    c = q.confirm(["run-2"], [])
    assert (c.stored, c.dead_lettered, c.stale, c.newest_sent_ms) == (10, 0, 0, T0)
    assert q.confirm(["run-2", ""], []) == (0, 0, 1, 0)  # a duplicate receipt; an empty id is never looked up
    assert q.confirm([], ["run-1"]).dead_lettered == 10
    assert q.replay_rows == 10 and q.counters["dead_lettered"] == 10
    q.commit([row(s) for s in range(31, 36)])
    b = q.fetch(30, 10, hand_out=True)
    assert b is not None  # its receipt came before the rows were moved: deleted where they are, never kept
    assert q.delete([(b.first_id, b.last_id)], stored=True) == 5 and (q.rows, q.replay_rows) == (0, 10)
    q.close()
    q2 = DurableQueue(str(tmp_path / "q.db"))
    assert q2.receipts and q2.replay_rows == 10 and q2.counters["dead_lettered"] == 10
    q2.close()


def test_a_resend_retags_its_rows_so_a_late_receipt_of_the_earlier_send_deletes_nothing(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"))
    q.set_receipts(True)
    q.commit([row(s) for s in range(1, 21)])
    sent(q, 1, 10, "run-1", now_ms=T0)
    sent(q, 11, 20, "run-2", now_ms=T0 + 5000)
    assert q.fetch_due(T0, 100, "run-3", T0 + 6000) is None  # nothing sent before T0
    again = q.fetch_due(T0 + 1, 4, "run-3", T0 + 6000)  # the oldest 4 of batch run-1
    assert again is not None and seqs(again.payloads) == [1, 2, 3, 4]
    assert q.fetch_due(T0 + 1, 100, "run-4", T0 + 6000) is not None  # the other 6, not these 4 again
    assert q.fetch_due(T0 + 1, 100, "run-5", T0 + 6000) is None
    late = q.confirm(["run-1"], [])  # the first send was stored after all, but its rows travel under newer ids now
    assert (late.stored, late.stale) == (0, 1) and q.replay_rows == 20
    assert q.confirm(["run-3"], []).stored == 4 and q.confirm(["run-4"], []).stored == 6
    assert q.replay_rows == 10
    q.close()


def test_receipts_mode_never_ends_a_row_by_the_clock_and_counts_its_trims_apart(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"), max_rows=50, replay_window_s=0)
    q.commit([row(s) for s in range(1, 41)])
    b = q.fetch(0, 10, hand_out=True)
    assert b is not None
    q.delete([(b.first_id, b.last_id)], batches=["x-1"])  # no window, no receipts yet: deleted on PUBACK
    assert (q.rows, q.replay_rows) == (30, 0)
    q.set_receipts(True)
    sent(q, 11, 40, "x-2")
    assert (q.rows, q.replay_rows) == (0, 30)  # kept although replay_window_s = 0
    assert q.prune_replay(T0 + 10**9) == 0
    q.commit([row(s) for s in range(41, 71)])  # 30 + 30 > 50: the oldest unconfirmed go first, counted
    assert (q.rows, q.replay_rows, q.counters["unconfirmed_trimmed"], q.counters["replay_trimmed"]) == (30, 20, 10, 0)
    assert q.counters["dropped_full"] == 0
    q.set_receipts(False)  # receipts turned off: the replay window rules again
    q.commit([row(s) for s in range(71, 76)])
    assert (q.counters["unconfirmed_trimmed"], q.counters["replay_trimmed"]) == (10, 5)
    q.close()
    assert not DurableQueue(str(tmp_path / "q.db")).receipts


def test_version_2_queue_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A queue file of the previous version (replay table without batch ids) opens as version 3; its replay rows
    are kept untagged, so no receipt deletes them and they are sent again under a new id."""
    path = tmp_path / "q.db"
    q = DurableQueue(str(path), replay_window_s=180)
    q.commit([row(s) for s in range(1, 6)])
    b = q.fetch(0, 5, hand_out=True)
    assert b is not None
    q.delete([(b.first_id, b.last_id)], now_ms=T0)
    q.close()
    db = sqlite3.connect(path)  # make it a version 2 file: the table as that version created it
    db.executescript("""
        DROP INDEX replay_batch;
        CREATE TABLE old (id INTEGER PRIMARY KEY, payload BLOB NOT NULL, acked_at INTEGER NOT NULL);
        INSERT INTO old SELECT id, payload, acked_at FROM replay;
        DROP TABLE replay; ALTER TABLE old RENAME TO replay;
        CREATE INDEX replay_acked_at ON replay (acked_at);
        PRAGMA user_version = 2;
    """)
    db.close()
    q2 = DurableQueue(str(path), replay_window_s=180)
    assert q2.replay_rows == 5 and not q2.receipts
    q2.set_receipts(True)
    assert q2.confirm([""], []).stored == 0
    again = q2.fetch_due(T0 + 1, 10, "new-1", T0 + 2000)
    assert again is not None and seqs(again.payloads) == [1, 2, 3, 4, 5]
    assert q2.confirm(["new-1"], []).stored == 5
    q2.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.close()


def test_plan_resends_overtaken_rows_at_once_and_probes_a_silent_backend_with_backoff() -> None:
    r = Receipts(1.0, Stats())
    assert r.next_id() != Receipts(1.0, Stats()).next_id()  # a new run token every start
    assert Receipts(0, Stats()).next_id() == ""  # receipts off: no id, no receipt
    # nothing confirmed yet: only a probe of rows older than the timeout
    assert r.plan(T0, 0.0) == [Resend(T0 - 1000, 1, probe=True)]
    assert r.plan(T0 + 500, 0.5) == []  # looked less than a second ago
    r.probed(1.0)
    assert r.plan(T0 + 1500, 1.5) == []  # the next probe waits 1 s, then 2 s, 4 s, ... up to 32 s
    r.probed(2.0)
    assert r.plan(T0 + 3500, 3.5) == [] and r.plan(T0 + 4500, 4.5) == [Resend(T0 + 3500, 1, probe=True)]
    # a receipt comes: the batch sent at T0+4000 is confirmed at T0+4100, and probing starts again from 1 s
    r.deliver(mqtt.json_encoder.encode(mqtt.Receipt(stored=["x"])))
    assert r.drain() == [("x", "stored")]
    r.confirmed(T0 + 4000, T0 + 4100)
    assert r.plan(T0 + 5000, 6.0) == [Resend(T0 + 4000, 1, probe=True)]  # confirmed less than a timeout ago
    # a timeout after the confirmation, everything sent before that batch is overtaken: all of it goes at once
    assert r.plan(T0 + 5200, 7.0) == [Resend(T0 + 4000, 1 << 30, probe=False), Resend(T0 + 4200, 1, probe=True)]
    stats = Stats()
    bad = Receipts(1.0, stats)
    bad.deliver(b"not json")  # counted and ignored
    assert bad.drain() == [] and stats.errors["receipt_invalid"] == 1 and bad.last_receipt_ms == 0
