"""Ground truth under a lossy link: a minimal gateway that follows docs/protocol.md section 3 must end up with
exactly the readings the meter's truth says it can have, each once and value for value.

This checks the simulator's bookkeeping (produced / dropped / lost / acked) that the gateway and end-to-end tests
rely on, with corruption and loss in both directions, queue overflow and reboots. All in simulated time, sans-IO.
"""

from __future__ import annotations

import msgspec
import pytest

from protocol import frames
from sim.faults import LinkFaults
from sim.meter import MeterModel

START_MS = 1_768_500_000_000
U32 = 0xFFFFFFFF


class MiniGateway:
    """Commits every valid reading once, ACKs cumulatively up to the first gap, moves past readings a STATUS
    declares discarded, and asks for SYNC whenever it is unsure which boot a reading belongs to."""

    def __init__(self) -> None:
        self.decoder = frames.Decoder()
        self.boot: int | None = None
        self.latest_uptime = 0
        self.seqs: set[int] = set()
        self.ack_point = 0
        self.delivered: dict[tuple[int, int], frames.Reading] = {}
        self.duplicates = 0
        self.declared_dropped: set[tuple[int, int]] = set()
        self.last_sync = -(10**9)
        self.errors = 0

    def feed(self, data: bytes, now: int) -> bytes:
        out = b""
        for item in self.decoder.feed(data):
            if isinstance(item, frames.FrameError):
                self.errors += 1
            elif isinstance(item, frames.Hello):
                if item.boot_count != self.boot:
                    self.boot, self.seqs, self.ack_point = item.boot_count, set(), 0
                    self.latest_uptime = 0
            elif isinstance(item, frames.Reading):
                out += self._reading(item, now)
            elif (
                isinstance(item, frames.Status) and self.boot is not None and item.oldest_seq > self.ack_point + 1
            ):
                self.declared_dropped |= {
                    (self.boot, s) for s in range(self.ack_point + 1, item.oldest_seq) if s not in self.seqs
                }
                self.ack_point = item.oldest_seq - 1
                out += self._ack()
        return out

    def _reading(self, r: frames.Reading, now: int) -> bytes:
        fresh = not r.flags & frames.FLAG_RESENT
        # a fresh reading older than the newest one seen: the meter restarted and its HELLO was lost
        went_back = fresh and self.boot is not None and (r.uptime_ms - self.latest_uptime) & U32 > 2**31
        if went_back or (fresh and r.flags & frames.FLAG_FIRST_AFTER_BOOT and self.seqs):
            self.boot = None
        if self.boot is None:
            if now - self.last_sync >= 500:
                self.last_sync = now
                return frames.encode(frames.Sync())
            return b""
        if fresh:
            self.latest_uptime = r.uptime_ms
        key = (self.boot, r.seq)
        plain = msgspec.structs.replace(r, flags=r.flags & ~frames.FLAG_RESENT)
        if key in self.delivered:
            self.duplicates += 1
            assert self.delivered[key] == plain, "same key, different reading"
        else:
            self.delivered[key] = plain
        self.seqs.add(r.seq)
        return self._ack()

    def _ack(self) -> bytes:
        assert self.boot is not None
        while self.ack_point + 1 in self.seqs:
            self.ack_point += 1
        return frames.encode(frames.Ack(self.boot, self.ack_point))


@pytest.mark.parametrize(
    "tx_rate, rx_rate, capacity, reboot_every",
    [(0.0, 0.0, 16, 0), (0.05, 0.05, 16, 0), (0.2, 0.2, 4, 0), (0.05, 0.1, 16, 1500), (0.3, 0.3, 8, 700)],
    ids=["clean", "lossy", "very-lossy-small-queue", "lossy-with-reboots", "hostile"],
)
def test_lossy_link_delivers_exactly_what_the_truth_allows(
    tx_rate: float, rx_rate: float, capacity: int, reboot_every: int
) -> None:
    meter = MeterModel(
        "a1c55000000000aa", start_ms=START_MS, seed="delivery", report_period_ms=20, queue_capacity=capacity,
        resend_min_ms=200, integration_step_ms=20,
    )
    tx, rx = LinkFaults("tx"), LinkFaults("rx")
    for faults, rate in ((tx, tx_rate), (rx, rx_rate)):
        faults.corrupt_rate = rate / 2
        faults.drop_rate = rate / 2
    gw = MiniGateway()
    to_meter = b""
    steps = 6000
    for k in range(steps):
        now = START_MS + 7 * k  # gateway reads every 7 ms
        if reboot_every and k % reboot_every == reboot_every - 1:
            meter.reboot(now)
        out = meter.receive_frames(rx.apply_stream(to_meter), now)
        to_meter = gw.feed(b"".join(tx.apply(out)), now)
    # a clean tail: let the protocol finish its recoveries
    tx.corrupt_rate = tx.drop_rate = rx.corrupt_rate = rx.drop_rate = 0.0
    for k in range(steps, steps + 600):
        now = START_MS + 7 * k
        out = meter.receive_frames(rx.apply_stream(to_meter), now)
        to_meter = gw.feed(b"".join(tx.apply(out)), now)

    truth = meter.truth()
    produced = {(p.boot, p.seq): p.frame for p in truth.produced}
    assert len(produced) > 1500
    delivered = set(gw.delivered)
    assert delivered <= set(produced), "the gateway holds readings the meter never made"
    for key in delivered:
        assert gw.delivered[key] == produced[key], key
    assert truth.must_have() <= delivered
    assert set(produced) - delivered <= truth.may_miss()
    assert gw.declared_dropped <= truth.dropped
    if tx_rate == 0 and rx_rate == 0:
        assert delivered == set(produced) and not truth.dropped and gw.duplicates == 0
    else:
        assert tx.corrupted and tx.dropped and rx.corrupted and rx.dropped
        assert len(delivered) > 0.5 * len(produced)
    if reboot_every:
        assert truth.boot_count == 1 + steps // reboot_every
