"""Sans-IO link state: dedupe, cumulative ACK with gaps, STATUS.oldest_seq, uptime -> wall clock (with wrap)."""

from __future__ import annotations

import pytest

from gateway.link import U32, Progress, Session, signed_delta
from protocol import frames


def reading(seq: int, uptime: int, flags: int = 0) -> frames.Reading:
    return frames.Reading(seq, uptime, 127000, 1000, 1270, 1270, 1000, 60000, 1000 * seq, flags)


def test_contiguous_ack_advances_and_duplicates_are_recognised() -> None:
    p = Progress("a1c5500000000001", 1)
    assert p.ack_seq == 0
    assert all(p.add(s) for s in (1, 2, 3))
    assert p.ack_seq == 3
    assert not p.add(2)
    assert p.is_duplicate(3) and not p.is_duplicate(4)


def test_gap_holds_the_ack_until_the_missing_reading_arrives() -> None:
    p = Progress("a1c5500000000001", 1)
    for s in (1, 2, 4, 5):
        p.add(s)
    assert p.ack_seq == 2
    assert p.is_duplicate(5)
    assert p.add(3)
    assert p.ack_seq == 5 and p.above == set()


def test_status_oldest_seq_declares_readings_dropped_at_meter() -> None:
    p = Progress("a1c5500000000001", 1)
    for s in (1, 2, 6, 8):
        p.add(s)
    # the meter holds nothing older than 7: 3, 4, 5 were discarded (6 we have), 7 is still held
    dropped, skipped = p.meter_oldest(7, meter_dropped=3)
    assert (dropped, skipped) == (3, 0)
    assert p.ack_seq == 6 and p.above == {8}
    assert p.dropped_at_meter == 3
    assert p.meter_oldest(7, meter_dropped=3) == (0, 0)  # idempotent
    p.add(7)
    assert p.ack_seq == 8


def test_status_gap_beyond_meter_dropped_counter_is_skipped_not_dropped() -> None:
    # a fresh queue file meets a meter whose earlier readings were ACKed by someone else
    p = Progress("a1c5500000000001", 4)
    assert p.meter_oldest(101, meter_dropped=0) == (0, 100)
    assert p.ack_seq == 100 and p.dropped_at_meter == 0


def test_status_below_ack_changes_nothing() -> None:
    p = Progress("a1c5500000000001", 1)
    p.add(1)
    p.dirty = False
    assert p.meter_oldest(1, 0) == (0, 0) and p.meter_oldest(2, 0) == (0, 0)
    assert not p.dirty


def test_signed_delta_across_the_wrap() -> None:
    assert signed_delta(5, U32 - 5) == 10
    assert signed_delta(U32 - 5, 5) == -10
    assert signed_delta(1000, 400) == 600


def test_fresh_readings_anchor_and_resent_ones_map_back() -> None:
    p = Progress("a1c5500000000001", 1)
    assert p.timestamp(reading(1, 10_000), recv_ms=1_000_000) == 1_000_000
    assert p.timestamp(reading(2, 11_000), recv_ms=1_001_005) == 1_001_005  # fresh: re-anchored (drift cancels)
    assert p.timestamp(reading(1, 10_000, frames.FLAG_RESENT), recv_ms=1_009_000) == 1_000_005


def test_timestamp_mapping_across_the_49_day_wrap() -> None:
    p = Progress("a1c5500000000001", 1)
    before_wrap = U32 - 500  # 500 ms before the counter wraps
    after_wrap = 700  # 1200 ms later
    assert p.timestamp(reading(1, before_wrap), recv_ms=5_000_000) == 5_000_000
    assert p.timestamp(reading(2, after_wrap), recv_ms=5_001_200) == 5_001_200
    # a resend of the pre-wrap reading maps through the post-wrap anchor
    assert p.timestamp(reading(1, before_wrap, frames.FLAG_RESENT), recv_ms=5_004_000) == 5_000_000


def test_resent_reading_newer_than_a_stored_anchor_is_extrapolated_not_stamped_now() -> None:
    # gateway restarted: the anchor came from the database, the meter resends what it kept meanwhile
    p = Progress("a1c5500000000001", 1, anchor_uptime=50_000, anchor_ms=2_000_000)
    assert p.timestamp(reading(9, 53_000, frames.FLAG_RESENT), recv_ms=2_010_000) == 2_003_000
    # ...but never into the future
    assert p.timestamp(reading(10, 90_000, frames.FLAG_RESENT), recv_ms=2_010_001) == 2_010_001


def test_resent_readings_without_any_anchor_are_placed_by_status_and_period() -> None:
    p = Progress("a1c5500000000001", 3)
    # STATUS said next_seq=17: the newest held reading is 16; period 1 s
    ts = p.timestamp(reading(12, 40_000, frames.FLAG_RESENT), recv_ms=9_000_000, newest_seq=16, period_ms=1000)
    assert ts == 9_000_000 - 4000
    assert p.timestamp(reading(13, 41_000, frames.FLAG_RESENT), recv_ms=9_000_002) == 9_000_000 - 3000


def test_stamps_of_one_boot_never_collide_so_influxdb_keeps_every_reading() -> None:
    p = Progress("a1c5500000000001", 1)
    # two fresh readings in one serial read share an arrival time
    first = p.stamp(p.timestamp(reading(1, 10_000), recv_ms=1_000_000))
    second = p.stamp(p.timestamp(reading(2, 10_020), recv_ms=1_000_000))
    assert (first, second) == (1_000_000, 1_000_001)
    # a resend placed onto a time already handed out moves to the next free millisecond
    p.stamp(1_000_003)
    assert p.stamp(1_000_002) == 1_000_002 and p.stamp(1_000_002) == 1_000_004


@pytest.mark.parametrize("interval", [1.0, 0.25])
def test_sync_is_rate_limited_per_session(interval: float) -> None:
    s = Session("/dev/ttyX")
    assert s.should_sync(100.0, interval)
    assert not s.should_sync(100.0 + interval / 2, interval)
    assert s.should_sync(100.0 + interval, interval)


def test_session_hello_change_detection() -> None:
    s = Session("/dev/ttyX")
    h = frames.Hello(bytes.fromhex("a1c5500000000001"), 1, 0, 0, 1, 7, 1000)
    assert s.on_hello(h)
    s.status = frames.Status(1, 5, 4, 0, 0, 4800)
    assert not s.on_hello(h)  # answer to our SYNC: same boot
    assert s.newest_seq == 4
    assert s.on_hello(frames.Hello(bytes.fromhex("a1c5500000000001"), 1, 0, 0, 1, 8, 1000))  # rebooted
    assert s.status is None and s.boot == 8
