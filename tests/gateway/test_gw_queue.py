"""The durable queue: commit/fetch/delete, bounds with counted policies, expiry, progress persistence, and a
writer process killed with SIGKILL mid-commit leaving a consistent database."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.errors import QueueError
from gateway.link import Progress
from gateway.pump import batch_payload
from gateway.queue import ROW_OVERHEAD, DurableQueue, Row
from protocol import mqtt

DEVICE = "a1c5500000000001"


def row(seq: int, ts: int = 1_700_000_000_000, device: str = DEVICE, boot: int = 1) -> Row:
    reading = mqtt.Reading(
        device=device, boot=boot, seq=seq, ts=ts + seq, vrms=127.0, irms=1.0, p=127.0, s=127.0, pf=1.0,
        freq=60.0, energy_mwh=seq * 10,
    )  # fmt: skip
    return Row(device, boot, seq, ts + seq, mqtt.json_encoder.encode(reading))


def test_commit_fetch_delete_in_order_and_depth_is_exact(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"))
    rows = [row(s) for s in range(1, 1201)]
    q.commit(rows[:700])
    q.commit(rows[700:])
    assert q.rows == 1200
    assert q.bytes == sum(len(r.payload) for r in rows) + 1200 * ROW_OVERHEAD
    b1 = q.fetch(0, 500)
    assert b1 is not None and len(b1.payloads) == 500
    b2 = q.fetch(b1.last_id, 500)
    assert b2 is not None and b2.first_id == b1.last_id + 1
    payload = batch_payload("site-1", "gw-1", b1.payloads, 123)
    batch = mqtt.batch_decoder.decode(payload)  # what the backend decodes
    assert [r.seq for r in batch.readings] == list(range(1, 501))
    assert q.delete([(b2.first_id, b2.last_id), (b1.first_id, b1.last_id)]) == 1000
    assert q.delete([(b1.first_id, b1.last_id)]) == 0  # a PUBACK repeated after a restart deletes nothing
    assert q.rows == 200
    assert q.oldest_ts() == rows[1000].ts
    q.close()
    q2 = DurableQueue(str(tmp_path / "q.db"))
    assert q2.rows == 200 and q2.bytes == sum(len(r.payload) for r in rows[1000:]) + 200 * ROW_OVERHEAD
    q2.close()


def test_ids_are_never_reused_after_the_queue_empties(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"))
    q.commit([row(1), row(2)])
    b = q.fetch(0, 10)
    assert b is not None
    q.delete([(b.first_id, b.last_id)])
    q.commit([row(3)])
    b2 = q.fetch(0, 10)
    assert b2 is not None and b2.first_id > b.last_id  # an in-flight range can never cover a new row
    q.close()


def test_drop_oldest_policy_deletes_and_counts_persistently(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"), max_rows=100, full_policy="drop-oldest")
    q.commit([row(s) for s in range(1, 91)])
    result = q.commit([row(s) for s in range(91, 131)])
    assert result == (40, 30)
    assert q.rows == 100
    b = q.fetch(0, 1000)
    assert b is not None
    kept = [mqtt.batch_decoder.decode(batch_payload("s", "g", b.payloads, 0)).readings]
    assert [r.seq for r in kept[0]] == list(range(31, 131))  # the oldest went first
    q.close()
    q2 = DurableQueue(str(tmp_path / "q.db"), max_rows=100)
    assert q2.counters["dropped_full"] == 30
    q2.close()


def test_drop_oldest_respects_max_bytes(tmp_path: Path) -> None:
    one = len(row(1).payload) + ROW_OVERHEAD
    q = DurableQueue(str(tmp_path / "q.db"), max_bytes=one * 50 + 10)
    q.commit([row(s) for s in range(1, 81)])
    assert q.rows <= 50 and q.bytes <= one * 50 + 10
    assert q.counters["dropped_full"] == 80 - q.rows
    q.close()


def test_refuse_new_policy_reports_no_room(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"), max_rows=10, full_policy="refuse-new")
    q.commit([row(s) for s in range(1, 8)])
    assert q.room() == 3
    q.commit([row(s) for s in range(8, 11)])
    assert q.room() == 0
    q.close()


def test_expiry_deletes_old_readings_and_counts_them(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"), max_age_s=3600)
    now = 1_800_000_000_000
    q.commit([row(1, ts=now - 7200_000), row(2, ts=now - 7100_000), row(3, ts=now - 60_000)])
    assert q.expire(now) == 2
    assert q.rows == 1 and q.counters["expired"] == 2
    q.close()


def test_progress_is_committed_with_the_rows(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q.db"))
    p = q.load_progress(DEVICE, 3)
    assert p == Progress(DEVICE, 3)
    for s in (1, 2, 4):
        p.add(s)
    p.anchor_uptime, p.anchor_ms = 4000, 1_700_000_000_000
    q.commit([row(1, boot=3), row(2, boot=3), row(4, boot=3)], [p], {"dropped_at_meter": 0})
    q.close()
    q2 = DurableQueue(str(tmp_path / "q.db"))
    p2 = q2.load_progress(DEVICE, 3)
    assert (p2.contiguous, p2.above, p2.anchor_uptime, p2.anchor_ms) == (2, {4}, 4000, 1_700_000_000_000)
    q2.close()


def test_corrupt_queue_file_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not a database" * 100)
    q = DurableQueue(str(path))
    assert q.rows == 0
    q.commit([row(1)])
    q.close()
    assert list(tmp_path.glob("q.db.corrupt-*"))


def test_unwritable_location_raises_queue_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((QueueError, OSError)):
        DurableQueue(str(blocker / "q.db"))


_WRITER = textwrap.dedent(
    """
    import sys
    from gateway.queue import DurableQueue
    from test_gw_queue import row
    q = DurableQueue(sys.argv[1], synchronous="full")
    p = q.load_progress("a1c5500000000001", 1)
    seq = p.contiguous
    while True:
        n = 1 + seq % 37
        rows = [row(s) for s in range(seq + 1, seq + n + 1)]
        for s in range(seq + 1, seq + n + 1):
            p.add(s)
        q.commit(rows, [p], {"dropped_at_meter": 0})
        seq += n
        print(seq, flush=True)
    """
)


def test_writer_kill9_mid_commit_leaves_a_consistent_queue(tmp_path: Path) -> None:
    """SIGKILL a committing writer 12 times at random points: every commit is whole or absent, and everything
    the writer reported committed (what the gateway would have ACKed) is there."""
    path = str(tmp_path / "q.db")
    rng = random.Random(20261121)
    reported = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent
        )
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 60)):  # kill after N more commits were reported
            line = proc.stdout.readline()
            assert line, "writer died"
            reported = int(line)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [s for (s,) in db.execute("SELECT seq FROM readings ORDER BY id")]
        (contiguous,) = db.execute("SELECT contiguous FROM progress").fetchone()
        db.close()
        assert seqs == list(range(1, contiguous + 1)), "rows and progress committed together"
        assert contiguous >= reported, "a reported commit vanished"


def test_rows_handed_to_mqtt_are_never_dropped_or_expired(tmp_path: Path) -> None:
    """A reading counted as dropped must never arrive after all: rows in flight are left to their PUBACK."""
    q = DurableQueue(str(tmp_path / "q.db"), max_rows=100, max_age_s=3600)
    q.commit([row(s, ts=1_000_000) for s in range(1, 101)])
    b = q.fetch(0, 40, hand_out=True)
    assert b is not None and q.inflight_upto == b.last_id
    q.commit([row(s) for s in range(101, 131)])
    left = q.fetch(0, 1000)
    assert left is not None
    kept = [r.seq for r in mqtt.batch_decoder.decode(batch_payload("s", "g", left.payloads, 0)).readings]
    assert kept[:40] == list(range(1, 41)) and kept[40:] == list(range(71, 131))
    assert q.counters["dropped_full"] == 30
    assert q.expire(1_000_000 + 3600_000 + 10_000) == 30  # rows 71..100 (old ts); 1..40 are in flight
    q.close()


def test_replay_window_keeps_pubacked_rows_out_of_the_depth_and_trims_them_first(tmp_path: Path) -> None:
    """PUBACKed rows move to the replay table for ``replay_window_s``: not queued (depth, bytes, oldest), but
    within the bounds, where a new commit deletes the oldest of them first (counted, persisted) under either
    policy, before any unsent row; the window ends ``replay_window_s`` after the (last) PUBACK."""
    t0 = 1_700_000_000_000
    path = str(tmp_path / "q.db")
    q = DurableQueue(path, max_rows=100, replay_window_s=180.0)
    rows = [row(s) for s in range(1, 201)]
    q.commit(rows[:60])
    b = q.fetch(0, 60, hand_out=True)
    assert b is not None
    assert q.delete([(b.first_id, b.last_id)], now_ms=t0) == 60
    assert (q.rows, q.bytes, q.oldest_ts()) == (0, 0, None)
    assert q.replay_rows == 60 and q.replay_bytes == sum(len(r.payload) for r in rows[:60]) + 60 * ROW_OVERHEAD
    assert q.fetch(0, 10) is None  # never sent again as unsent rows
    upto = q.replay_upto()
    assert upto == b.last_id
    r1 = q.fetch_replay(0, upto, 50)
    r2 = q.fetch_replay(r1.last_id, upto, 50) if r1 else None
    assert r1 is not None and r2 is not None and r1.payloads + r2.payloads == [r.payload for r in rows[:60]]
    assert q.fetch_replay(r2.last_id, upto, 50) is None

    q.commit(rows[60:100])  # 40 unsent + 60 replay = 100: at the bound, nothing trimmed
    assert (q.rows, q.replay_rows, q.counters["replay_trimmed"]) == (40, 60, 0)
    assert q.room() == 60  # replay rows never hold back a new reading
    result = q.commit(rows[100:125])  # 25 over: the 25 oldest replay rows go, no unsent row
    assert result.dropped_full == 0 and q.counters["dropped_full"] == 0
    assert (q.rows, q.replay_rows, q.counters["replay_trimmed"]) == (65, 35, 25)
    first = q.fetch_replay(0, upto, 1)
    assert first is not None and first.payloads == [rows[25].payload]  # oldest first
    q.commit(rows[125:160])  # 35 more: the replay window is used up, still no unsent row dropped
    assert (q.rows, q.replay_rows, q.counters["replay_trimmed"], q.counters["dropped_full"]) == (100, 0, 60, 0)
    q.commit(rows[160:165])  # only now does drop-oldest touch unsent readings
    assert (q.rows, q.replay_rows, q.counters["dropped_full"]) == (100, 0, 5)

    b = q.fetch(0, 40, hand_out=True)
    assert b is not None
    q.delete([(b.first_id, b.first_id + 19)], now_ms=t0)
    q.delete([(b.first_id + 20, b.last_id)], now_ms=t0 + 100_000)
    assert (q.rows, q.replay_rows) == (60, 40)
    q.refresh_replay([(b.first_id, b.first_id + 9)], now_ms=t0 + 150_000)  # replayed and PUBACKed again
    assert q.prune_replay(t0 + 180_000) == 0  # nothing older than the window yet
    assert q.prune_replay(t0 + 180_001) == 10  # PUBACKed at t0 and not replayed since
    q.close()

    q2 = DurableQueue(path, max_rows=100, replay_window_s=180.0, full_policy="refuse-new")
    assert (q2.rows, q2.replay_rows, q2.counters["replay_trimmed"]) == (60, 30, 60)
    assert q2.room() == 40
    q2.commit(rows[165:195])  # refuse-new admits 40; the replay rows make room, counted
    assert (q2.rows, q2.replay_rows, q2.counters["replay_trimmed"]) == (90, 10, 80)
    assert q2.prune_replay(t0 + 330_001) == 10  # the refreshed ones and the later ones, each after its window
    q2.close()

    off = DurableQueue(str(tmp_path / "off.db"), replay_window_s=0)
    off.commit(rows[:5])
    b = off.fetch(0, 5)
    assert b is not None and off.delete([(b.first_id, b.last_id)]) == 5
    assert (off.rows, off.replay_rows, off.replay_upto()) == (0, 0, 0)
    off.close()
