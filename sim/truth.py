"""Ground truth of a simulated meter: what it really produced, discarded and lost, and how far it was acknowledged.

Downstream tests (gateway, end to end) compare what arrived at the gateway, the broker or the database with a
:class:`GroundTruth` snapshot taken from :meth:`sim.meter.MeterModel.truth` or :meth:`sim.port.VirtualMeter.truth`.
"""

from __future__ import annotations

from typing import NamedTuple

from protocol import frames


class ProducedReading(NamedTuple):
    """Ground truth for one reading as first sent (without RESENT)."""

    boot: int
    seq: int
    t_ms: int
    """Simulated Unix time (ms) at the end of the measuring window."""
    frame: frames.Reading
    """A :class:`frames.Reading2` from a bidirectional meter, a plain :class:`frames.Reading` from an old one."""


class GroundTruth(NamedTuple):
    """A snapshot of what one meter really did, for checking delivery downstream.

    Keys are ``(boot, seq)``. A correct chain delivers every produced reading exactly once, except those in
    :meth:`may_miss`: discarded from a full queue, lost in RAM by a reset, or still unacknowledged in the queue.
    Every reading at or below ``acked[boot]`` was acknowledged: the gateway claimed it durable, or declared it
    dropped at the meter after a STATUS. ``acked`` lists only boots that got an ACK.
    """

    device: str
    boot_count: int
    produced: tuple[ProducedReading, ...]
    dropped: frozenset[tuple[int, int]]
    lost: frozenset[tuple[int, int]]
    unacked: tuple[tuple[int, int], ...]
    acked: dict[int, int]
    energy_mwh: int
    rx_errors: int
    export_mwh: int = 0
    """The exported-energy register (always 0 for a meter without one, ``bidirectional=False``)."""

    def keys(self) -> set[tuple[int, int]]:
        return {(r.boot, r.seq) for r in self.produced}

    def may_miss(self) -> set[tuple[int, int]]:
        """Readings a correct gateway may legitimately never deliver."""
        return set(self.dropped) | set(self.lost) | set(self.unacked)

    def must_have(self) -> set[tuple[int, int]]:
        """Readings the gateway acknowledged, except those the meter had discarded (a STATUS told the gateway to
        move its ACK past them): the gateway must hold these durably."""
        acked = {(r.boot, r.seq) for r in self.produced if r.seq <= self.acked.get(r.boot, 0)}
        return acked - self.dropped
