"""The meter's measuring front end: what its ADC and metering core make of a household's supply in one window.

Separate from the protocol state machine (``sim.meter``) because it is a different concept: sensors, gains and
integration. The firmware (firmware/lib/metering) samples V and I 3200 times a second; here the load model is
sampled every ``integration_step_ms`` (midpoint rule), which is enough for the energy register to match the
integral of power within 0.1 % (tests/sim/test_sim_meter.py).

Calibration works as on the real board: every unit's sensors deviate from the nominal ("factory") gains by a few
per cent. A unit calibrated on the bench stores its true gains and reads right; one running on factory gains (blank
or corrupt EEPROM) reads a few per cent off and flags UNCALIBRATED. A CONFIG with other gains scales the readings
by ``gain in force / true gain``, exactly what a miscalibrated meter reports.
"""

from __future__ import annotations

import math
import random
from typing import Final, NamedTuple

from protocol import frames
from sim.loads import Household

# firmware/lib/board.h
FACTORY_V_GAIN: Final = 976_563
"""Microvolts of mains per ADC count, nominal."""
FACTORY_I_GAIN: Final = 146_484
"""Microamperes per ADC count, nominal."""
FACTORY_PHASE_CDEG: Final = 0
PAIR_RATE_HZ: Final = 3200
"""V/I sample pairs per second (reported as STATUS.sample_rate_hz)."""
NO_SIGNAL_V: Final = 12.7
"""Below 10 % of 127 V (the lower Brazilian nominal) the firmware flags NO_SIGNAL (firmware/lib/meter/meter.h)."""
GAIN_TOLERANCE: Final = 0.03
"""How far a unit's true gains lie from the nominal ones (voltage divider and CT tolerances)."""
V_RANGE_V: Final = 1.45 * 220
"""RMS voltage above which the voltage channel saturates."""
I_RANGE_A: Final = 100.0
"""RMS current above which the current channel saturates (a 100 A current transformer)."""


class Calibration(NamedTuple):
    """Gains in force (CONFIG fields): µV and µA of mains per ADC count, phase correction in 0.01°."""

    v_gain: int = FACTORY_V_GAIN
    i_gain: int = FACTORY_I_GAIN
    phase_cdeg: int = FACTORY_PHASE_CDEG


FACTORY: Final = Calibration()


class Window(NamedTuple):
    """One measured window in the READING's fixed-point units, plus its energy."""

    vrms_mv: int
    irms_ma: int
    p_dw: int
    s_dva: int
    pf_milli: int
    freq_mhz: int
    flags: int
    """V_CLIP, I_CLIP, NO_SIGNAL."""
    energy_uj: int
    """Imported active energy in the window, microjoules, as the meter counts it (on its own clock)."""
    export_uj: int = 0
    """Exported active energy in the window (negative mean power), microjoules."""


class FrontEnd:
    """Samples a :class:`Household` for one meter; knows the unit's true gains and whether the mains are on."""

    def __init__(self, load: Household, device_id: bytes, integration_step_ms: int = 200) -> None:
        if integration_step_ms < 1:
            raise ValueError("integration step must be positive")
        self.load = load
        self.integration_step_ms = integration_step_ms
        rng = random.Random(f"{device_id.hex()}/gains")
        self.true = Calibration(
            round(FACTORY_V_GAIN * (1 + rng.uniform(-GAIN_TOLERANCE, GAIN_TOLERANCE))),
            round(FACTORY_I_GAIN * (1 + rng.uniform(-GAIN_TOLERANCE, GAIN_TOLERANCE))),
            FACTORY_PHASE_CDEG,
        )
        self.mains_on = True
        self._mains_before = True
        self._mains_since = -math.inf

    def set_mains(self, on: bool, t_ms: float) -> None:
        """Supply on or off from ``t_ms`` (true simulated time) on."""
        self._mains_before, self._mains_since, self.mains_on = self.mains_on, t_ms, on

    def _powered(self, t_ms: float) -> bool:
        return self.mains_on if t_ms >= self._mains_since else self._mains_before

    def measure(self, t_a: float, t_b: float, meter_span_ms: float, cal: Calibration) -> Window:
        """The window over true times [t_a, t_b] ms, which the meter's clock measured as ``meter_span_ms``."""
        n = max(1, math.ceil(meter_span_ms / self.integration_step_ms)) if t_b > t_a else 0
        dt_true = (t_b - t_a) / n if n else 0.0
        sv2 = si2 = sp = sf = 0.0
        powered = 0
        for k in range(n):
            t = t_a + (k + 0.5) * dt_true
            if self._powered(t):
                powered += 1
                smp = self.load.sample(t / 1000)
                sv2 += smp.vrms * smp.vrms
                si2 += smp.irms * smp.irms
                sp += smp.p
                sf += smp.freq
        kv, ki = cal.v_gain / self.true.v_gain, cal.i_gain / self.true.i_gain
        if not powered:  # supply off, meter on USB power: a little noise on the voltage channel
            return Window(round(400 * kv), 0, 0, 0, 0, 0, frames.FLAG_NO_SIGNAL, 0)
        vrms, irms = math.sqrt(sv2 / n) * kv, math.sqrt(si2 / n) * ki
        p = sp / n * kv * ki
        s = vrms * irms
        flags = 0
        if vrms > V_RANGE_V:
            flags |= frames.FLAG_V_CLIP
        if irms > I_RANGE_A:
            flags |= frames.FLAG_I_CLIP
        if vrms < NO_SIGNAL_V:
            flags |= frames.FLAG_NO_SIGNAL
            pf_milli = freq_mhz = 0
        else:
            pf_milli = max(-1000, min(1000, round(p / s * 1000))) if s > 0 else 1000
            freq_mhz = round(sf / powered * 1000)
        # the firmware integrates the window's mean power over the window's length on its own clock, into the
        # import register when it is positive and into the export register when it is negative
        energy_uj = round(max(p, 0.0) * meter_span_ms * 1000)
        export_uj = round(max(-p, 0.0) * meter_span_ms * 1000)
        return Window(
            vrms_mv=min(0xFFFFFFFF, round(vrms * 1000)),
            irms_ma=min(0xFFFFFFFF, round(irms * 1000)),
            p_dw=round(p * 10),
            s_dva=min(0xFFFFFFFF, round(s * 10)),
            pf_milli=pf_milli,
            freq_mhz=freq_mhz,
            flags=flags,
            energy_uj=energy_uj,
            export_uj=export_uj,
        )
