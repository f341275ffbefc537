"""Sans-IO protocol state of the gateway side of a meter link (docs/protocol.md section 3).

Two pieces, both free of serial ports, SQLite and clocks (time is passed in):

- :class:`Progress` — per ``(device, boot)``: which sequence numbers are durable (for dedupe and the cumulative
  ACK), the readings the meter declared lost, and the uptime -> wall-clock anchor. It is persisted in the queue's
  ``progress`` table in the same transaction as the readings, so a restarted gateway neither re-forwards nor
  mis-ACKs.
- :class:`Session` — per open port: the HELLO seen on it (if any), the meter's last STATUS and the SYNC rate limit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from protocol import frames

U32 = 1 << 32
RECENT_STAMPS = 4096
"""Timestamps of this boot remembered to keep them unique: minutes of readings even at the fastest period."""


def signed_delta(a: int, b: int) -> int:
    """``a - b`` for two u32 uptimes, as a signed value in [-2^31, 2^31): correct across the 49.7-day wrap."""
    return ((a - b + (1 << 31)) % U32) - (1 << 31)


@dataclass(slots=True)
class Progress:
    """Durable-progress bookkeeping for one boot of one meter.

    ``contiguous``: every seq <= this is committed to the queue or was declared lost by the meter, so it is what
    the gateway ACKs. ``above``: committed seqs beyond a gap (a frame lost in transit); the ACK stays below the gap
    until it is filled or the meter's STATUS says the missing readings are gone.
    """

    device: str
    boot: int
    contiguous: int = 0
    above: set[int] = field(default_factory=set)
    anchor_uptime: int | None = None
    anchor_ms: int | None = None
    dropped_at_meter: int = 0
    dirty: bool = False
    stamps: OrderedDict[int, None] = field(default_factory=OrderedDict)
    """The latest timestamps handed out (not persisted), so that no two readings of this boot share one."""

    def is_duplicate(self, seq: int) -> bool:
        return seq <= self.contiguous or seq in self.above

    def add(self, seq: int) -> bool:
        """Mark ``seq`` committed (tentatively: the caller commits before it ACKs). False if already known."""
        if self.is_duplicate(seq):
            return False
        self.dirty = True
        if seq == self.contiguous + 1:
            self.contiguous = seq
            above = self.above
            while self.contiguous + 1 in above:
                self.contiguous += 1
                above.discard(self.contiguous)
        else:
            self.above.add(seq)
        return True

    def meter_oldest(self, oldest_seq: int, meter_dropped: int | None = None) -> tuple[int, int]:
        """Apply a STATUS: every seq below ``oldest_seq`` that we never got is gone from the meter.

        Moves the ACK past them and returns ``(dropped, skipped)``: ``dropped`` readings the meter discarded
        from its full queue (counted as dropped-at-meter), at most what its STATUS ``dropped`` counter allows for
        this boot; ``skipped`` the rest — readings this gateway never saw that the meter did not drop (they were
        ACKed by another gateway or before this queue file existed).
        """
        if oldest_seq <= self.contiguous + 1:
            return 0, 0
        missing = oldest_seq - 1 - self.contiguous - sum(1 for s in self.above if s < oldest_seq)
        self.above = {s for s in self.above if s >= oldest_seq}
        self.contiguous = oldest_seq - 1
        while self.contiguous + 1 in self.above:
            self.contiguous += 1
            self.above.discard(self.contiguous)
        dropped = missing if meter_dropped is None else max(0, min(missing, meter_dropped - self.dropped_at_meter))
        self.dropped_at_meter += dropped
        self.dirty = True
        return dropped, missing - dropped

    @property
    def ack_seq(self) -> int:
        """The cumulative ACK for this boot (0 = nothing yet)."""
        return self.contiguous

    def timestamp(self, reading: frames.Reading, recv_ms: int, *, newest_seq: int = 0, period_ms: int = 0) -> int:
        """Wall-clock time (ms since the epoch) at which ``reading`` was measured.

        protocol.md: ``ts = gateway_now - ((uptime_latest - uptime_ms) mod 2^32)``, with the anchor
        ``(uptime_latest, gateway_now)`` taken from the newest reading of this boot. A fresh (not RESENT) reading
        was measured just before it arrived, so it re-anchors the mapping (this also cancels meter clock drift).
        A RESENT reading is mapped through the anchor; if it is newer than the anchor (the gateway restarted or
        missed the boot's first frames) it is extrapolated from the anchor, never into the future. Without any
        anchor, a RESENT reading is placed ``(newest_seq - seq) x period_ms`` before its arrival, using the meter's
        last STATUS (``newest_seq = next_seq - 1``) and its report period.
        """
        uptime = reading.uptime_ms
        resent = bool(reading.flags & frames.FLAG_RESENT)
        if self.anchor_uptime is None or self.anchor_ms is None:
            ts = recv_ms
            if resent and newest_seq > reading.seq and period_ms > 0:
                ts = recv_ms - (newest_seq - reading.seq) * period_ms
            self.anchor_uptime, self.anchor_ms = uptime, ts
            self.dirty = True
            return ts
        d = signed_delta(uptime, self.anchor_uptime)
        if d < 0:  # older than the anchor (a resend): placed behind it; the anchor stays on the newest reading
            return self.anchor_ms - ((self.anchor_uptime - uptime) % U32)
        ts = recv_ms if not resent else min(recv_ms, self.anchor_ms + d)
        self.anchor_uptime, self.anchor_ms = uptime, ts
        self.dirty = True
        return ts

    def stamp(self, ts: int) -> int:
        """``ts`` (from :meth:`timestamp`) made unique among this boot's recent readings; call it once per reading
        that is kept."""
        # InfluxDB keys a point by device and time, so two readings of one meter stamped with the same millisecond
        # would overwrite each other: two fresh readings in one serial read share an arrival time, and a resend
        # placed by the report period can land on a fresh reading's time. The next free millisecond is as good an
        # estimate (arrival jitter is larger) and keeps every reading.
        while ts in self.stamps:
            ts += 1
        self.stamps[ts] = None
        if len(self.stamps) > RECENT_STAMPS:
            self.stamps.popitem(last=False)
        return ts


@dataclass(slots=True)
class Session:
    """What the gateway knows about the meter on one open port."""

    port: str
    hello: frames.Hello | None = None
    status: frames.Status | None = None
    last_sync_mono: float = float("-inf")
    last_resync_mono: float = float("-inf")
    """When a boot mismatch last made us SYNC (the next one waits ``sync_interval_s``)."""
    resync_warned_mono: float = float("-inf")

    @property
    def device(self) -> str | None:
        return self.hello.device if self.hello else None

    @property
    def boot(self) -> int | None:
        return self.hello.boot_count if self.hello else None

    def on_hello(self, hello: frames.Hello) -> bool:
        """Register the meter; True when this is a different meter or a new boot (the STATUS is then stale)."""
        changed = self.hello is None or (self.hello.device_id, self.hello.boot_count) != (
            hello.device_id,
            hello.boot_count,
        )
        if changed:
            self.status = None
        self.hello = hello
        return changed

    def should_sync(self, mono: float, interval_s: float) -> bool:
        """A READING came without a HELLO: send SYNC, but at most once per ``interval_s``."""
        if mono - self.last_sync_mono >= interval_s:
            self.last_sync_mono = mono
            return True
        return False

    @property
    def newest_seq(self) -> int:
        """The newest seq the meter had produced at its last STATUS (0 when unknown)."""
        return self.status.next_seq - 1 if self.status else 0
