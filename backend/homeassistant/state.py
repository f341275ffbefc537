"""A meter's readings reduced to the one state Home Assistant shows (sans-IO).

Which reading is the latest. Delivery is at-least-once and a gateway sends readings again after a reconnect
(docs/mqtt.md), so a batch may carry readings older than one already shown. Within one boot the meter numbers
its readings, so a higher ``seq`` is newer whatever the clocks say; across boots the boot counter is not enough
(it restarts when the EEPROM is replaced), so the measured time decides. A replayed reading therefore never moves
a sensor back, and one reading with a wrong timestamp cannot freeze a meter until the clock catches up with it.

What the energy sensors show. The meter keeps its registers (mWh, imported and exported) in EEPROM across boots,
so they only grow, and Home Assistant's ``total_increasing`` reads a drop as a new meter cycle and adds the new
value from zero. That is right for a register that really restarted from zero, and wrong for a glitch: a value
that jumps up and comes back would be counted once on the way up and then, as a "new cycle", a whole register's
worth on the way down. So each register goes through :class:`RegisterGuard`, the streaming form of the rules of
backend/store/registers.py: a step that is negative or implies more than ``max_power_w`` is held until the next
reading decides; the series continuing from the held value makes it real (a reset, or a register rewritten
upward), the series continuing from the previous value makes it a spike, which is dropped. A lower value under a
new boot counter is a reset at once. The bridge keeps no total of its own across resets: it would have to
survive the bridge's restarts, and Home Assistant's statistics already sum the cycles.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from protocol.mqtt import Reading

_MWH_PER_KWH: Final = 1_000_000
_MIN_STEP_MS: Final = 1_000
"""Floor of the time a step is judged over: two readings in the same millisecond do not make infinite power."""


class Sample(NamedTuple):
    ts_ms: int
    boot: int
    mwh: int


def _plausible(a: Sample, b: Sample, max_power_w: float) -> bool:
    delta = b.mwh - a.mwh
    return delta >= 0 and delta * 3600 / max(b.ts_ms - a.ts_ms, _MIN_STEP_MS) <= max_power_w  # mWh/ms -> W


class RegisterGuard:
    """One cumulative register as Home Assistant should see it (see the module docstring)."""

    def __init__(self, max_power_w: float) -> None:
        self.max_power_w = max_power_w
        self.accepted: Sample | None = None
        self._held: Sample | None = None

    def feed(self, s: Sample) -> None:
        """Take the next (newer) sample of the register."""
        last = self.accepted
        if last is None or _plausible(last, s, self.max_power_w):
            self.accepted, self._held = s, None  # a held value the series went past was a spike
        elif s.boot != last.boot and s.mwh < last.mwh:
            self.accepted, self._held = s, None  # restarted under a new boot counter: a reset, no doubt about it
        elif self._held is not None and _plausible(self._held, s, self.max_power_w):
            self.accepted, self._held = s, None  # the series continues from the held value: it was real
        else:
            self._held = s

    @property
    def kwh(self) -> float:
        return self.accepted.mwh / _MWH_PER_KWH if self.accepted is not None else 0.0


class State(msgspec.Struct, frozen=True):
    """The payload of ``cds-ha/v1/<site>/<device>/state``; the discovery configs read its fields by name."""

    power: float
    """Active power, W (negative = export)."""
    voltage: float
    """V RMS."""
    current: float
    """A RMS."""
    power_factor: float
    """%, -100..100 (negative while exporting)."""
    energy: float
    """Imported energy register, kWh."""
    energy_export: float
    """Exported energy register, kWh (0 for a meter without one)."""
    ts: int
    """Measured time of the reading shown, ms since the Unix epoch."""


def newer(r: Reading, than: Reading) -> bool:
    """Whether ``r`` was measured after ``than`` (see the module docstring)."""
    return r.seq > than.seq if r.boot == than.boot else r.ts > than.ts


class MeterState:
    """The latest reading of one meter and its guarded registers."""

    def __init__(self, max_power_w: float) -> None:
        self.latest: Reading | None = None
        self.imported = RegisterGuard(max_power_w)
        self.exported = RegisterGuard(max_power_w)
        self.exports = False
        """True once the meter reported exported energy."""

    def feed(self, r: Reading) -> bool:
        """Take a reading; False when it is not newer than the one shown (a replay), which changes nothing."""
        if self.latest is not None and not newer(r, self.latest):
            return False
        self.latest = r
        self.imported.feed(Sample(r.ts, r.boot, r.energy_mwh))
        self.exported.feed(Sample(r.ts, r.boot, r.energy_export_mwh))
        self.exports = self.exports or r.energy_export_mwh > 0
        return True

    def state(self) -> State | None:
        r = self.latest
        if r is None:
            return None
        return State(power=r.p, voltage=r.vrms, current=r.irms, power_factor=round(r.pf * 100, 1),
                     energy=self.imported.kwh, energy_export=self.exported.kwh, ts=r.ts)
