"""What each meter really produced, in one shape for both kinds of meter, for the reconciliation.

A simulated meter (``sim.meter.MeterModel``) records its own ground truth; the real firmware in simavr cannot, so
its relay (:mod:`bench.chaoslib.avrmeter`) records what the firmware wrote on its UART before any fault touched
it. Both end up as a :class:`MeterRecord`: every reading produced before the meter was cut off, and the readings a
correct chain may legitimately never store, each with the reason.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from protocol import frames

Key = tuple[int, int]
"""(boot, seq): a reading of one meter, for life."""

DROPPED: Final = "dropped at the meter (its 16-reading queue was full)"
RESET: Final = "lost in the meter's RAM at a reset (never acknowledged)"
UNACKED: Final = "still unacknowledged in the meter when it was cut off"


class Produced(NamedTuple):
    """One reading as the meter first sent it."""

    boot: int
    seq: int
    t_ms: int
    """Wall-clock time (Unix ms) the meter produced it: the end of its window (simulated meter, speed 1) or the
    moment the relay read it off the firmware's UART."""
    frame: frames.Reading


class MeterRecord(NamedTuple):
    """Ground truth of one meter for the reconciliation."""

    device: str
    firmware: bool
    produced: tuple[Produced, ...]
    """Every reading produced before the cut-off, oldest first."""
    excused: dict[Key, str]
    """Readings a correct chain may never store, with the reason (:data:`DROPPED`, :data:`RESET`, :data:`UNACKED`)."""
    dropped_budget: dict[int, int]
    """Firmware only: per boot, readings its STATUS says it discarded from a full queue. Their seq numbers are not
    on the wire, so a missing reading the gateway acknowledged past is excused as dropped up to this count."""
    meter_dropped: int
    """Readings the meter itself counted as discarded from its full queue."""
    boots: int
    """Boots seen during the run (1 = never rebooted)."""
