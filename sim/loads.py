"""Realistic Brazilian residential loads, as a pure function of time.

A :class:`Household` combines a refrigerator, an electric shower, air conditioning, lighting and standby loads on a
127 V or 220 V, 60 Hz supply. Everything is reproducible from a seed: each appliance draws its events for a local
calendar day (America/Sao_Paulo) from ``random.Random(f"{seed}/{name}/{date}")``, so :meth:`Household.sample` is a
pure function of the instant. That is what lets the meter model integrate power at any step it likes and lets the
tests integrate the same power independently and compare.

Power is modelled per appliance as active power P (W) and non-active power Q (var, which for electronic loads also
stands for distortion power). The household adds them up: S = hypot(P, Q), I = S / V, PF = P / S. The supply
voltage has a daily profile (lower at the evening peak), slow fluctuations and a drop across the service drop's
resistance when heavy loads run (the lights dim when the shower starts); resistive loads follow V².

A solar household (``sim.solar.solar_household``) also has generators behind the meter: their output is
subtracted from the loads, so its net power is negative — an export — when the panels out-produce the house.
"""

from __future__ import annotations

import abc
import bisect
import datetime as dt
import math
import random
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

TIMEZONE: Final = "America/Sao_Paulo"
NOMINAL_FREQ: Final = 60.0
SUPPORTED_VOLTAGES: Final = (127, 220)


class Sample(NamedTuple):
    """What the mains look like at one instant, in SI units."""

    vrms: float
    irms: float
    p: float
    """Active power, W."""
    s: float
    """Apparent power, VA."""
    pf: float
    freq: float


class Event(NamedTuple):
    """One appliance activity: from ``start`` to ``end`` (Unix seconds) at ``level`` (W, or a 0..1 fraction)."""

    start: float
    end: float
    level: float


_SINES = tuple[tuple[float, float, float], ...]  # (amplitude, angular frequency rad/s, phase)


def _sines(rng: random.Random, count: int, periods_s: tuple[float, float], amplitude: float) -> _SINES:
    """A smooth, deterministic wobble: a few sines with random periods and phases (bounded by ``amplitude``)."""
    out = []
    for _ in range(count):
        period = rng.uniform(*periods_s)
        out.append((amplitude / count, 2 * math.pi / period, rng.uniform(0, 2 * math.pi)))
    return tuple(out)


def _wobble(sines: _SINES, t: float) -> float:
    return sum(a * math.sin(w * t + ph) for a, w, ph in sines)


class Appliance(abc.ABC):
    """Base class: events drawn per local day, looked up by time. Subclasses define ``_day`` and ``power``."""

    name: str = "appliance"

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        self.seed = seed
        self.clock = clock
        self._days: dict[int, tuple[list[float], list[Event]]] = {}

    def _rng(self, day: int) -> random.Random:
        return random.Random(f"{self.seed}/{self.name}/{day}")

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        """The day's switching events; an always-on appliance (standby) has none."""
        return []

    def _events(self, day: int) -> tuple[list[float], list[Event]]:
        cached = self._days.get(day)
        if cached is None:
            events = sorted(self._day(day, self.clock.midnight(day), self._rng(day)))
            cached = ([e.start for e in events], events)
            if len(self._days) > 8:
                self._days.pop(min(self._days))
            self._days[day] = cached
        return cached

    def active(self, t: float) -> Event | None:
        """The event in progress at ``t``. Events of one appliance never overlap; the previous day's last event
        may run past midnight."""
        day = self.clock.day(t)
        for d in (day, day - 1):
            starts, events = self._events(d)
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and events[i].end > t:
                return events[i]
        return None

    @abc.abstractmethod
    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        """(P W, Q var) at ``t`` with the supply at ``v_ratio`` x nominal."""


class Refrigerator(Appliance):
    """Compressor cycling 100-150 W at PF ~0.8, with a locked-rotor inrush at each start; longer runs when hot."""

    name = "fridge"
    INRUSH_S: Final = 1.5

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        super().__init__(seed, clock)
        rng = random.Random(f"{seed}/{self.name}")
        self.rated = rng.uniform(100, 150)
        self.pf = rng.uniform(0.76, 0.84)

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        events = []
        t = midnight + rng.uniform(0, 1200)
        while t < midnight + 86400:
            hour = (t - midnight) / 3600
            heat = 1 + 0.3 * math.exp(-(((hour - 15) / 4) ** 2))  # afternoon: longer runs, shorter rests
            on = rng.uniform(600, 1200) * heat
            events.append(Event(t, t + on, self.rated))
            t += on + rng.uniform(900, 1800) / heat
        return events

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        ev = self.active(t)
        if ev is None:
            return 0.0, 0.0
        since = t - ev.start
        if since < self.INRUSH_S:  # locked rotor: ~5x current at a poor power factor
            p, pf = ev.level * 3.0, 0.45
        else:  # settles from 115 % towards rated as the discharge pressure builds
            p, pf = ev.level * (1 + 0.15 * math.exp(-since / 120)), self.pf
        return p, p * math.tan(math.acos(pf))


class ElectricShower(Appliance):
    """A 4-7.5 kW resistive heater, used a few minutes at a time at the morning and evening peaks."""

    name = "shower"

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        super().__init__(seed, clock)
        rng = random.Random(f"{seed}/{self.name}")
        self.rated = rng.choice((4400, 5500, 6800, 7500)) * rng.uniform(0.95, 1.0)
        self.people = rng.randint(1, 4)

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        events: list[Event] = []
        for _ in range(self.people):
            # morning (06:00-08:30) or evening (18:00-22:30); some people shower twice on hot days
            slots = [rng.choice(((6.0, 8.5), (18.0, 22.5), (18.0, 22.5)))]
            if rng.random() < 0.25:
                slots.append((6.0, 8.5) if slots[0][0] > 12 else (18.0, 22.5))
            for lo, hi in slots:
                start = midnight + rng.uniform(lo, hi) * 3600
                level = 1.0 if rng.random() < 0.6 else 0.55  # "inverno" or "verão" position
                events.append(Event(start, start + rng.uniform(240, 720), level))
        # one shower head: whoever comes next waits until the previous person is done
        events.sort()
        for i in range(1, len(events)):
            prev, ev = events[i - 1], events[i]
            if ev.start < prev.end + 60:
                gap = prev.end + 60 + 120 * (i % 3) - ev.start
                events[i] = Event(ev.start + gap, ev.end + gap, ev.level)
        return events

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        ev = self.active(t)
        if ev is None:
            return 0.0, 0.0
        return self.rated * ev.level * v_ratio * v_ratio, 0.0


class AirConditioner(Appliance):
    """A split unit, inverter (modulating) or on/off (cycling), PF ~0.9, used in the afternoon and at night."""

    name = "ac"

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        super().__init__(seed, clock)
        rng = random.Random(f"{seed}/{self.name}")
        self.inverter = rng.random() < 0.6
        self.rated = rng.uniform(800, 1300) if self.inverter else rng.uniform(900, 1200)
        self.pf = rng.uniform(0.92, 0.97) if self.inverter else rng.uniform(0.85, 0.9)
        self.ripple = _sines(rng, 3, (300, 1800), 0.15)

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        month = dt.date.fromordinal(day).month
        hot = month in (11, 12, 1, 2, 3)
        sessions = []
        if rng.random() < (0.5 if hot else 0.1):
            sessions.append((rng.uniform(13, 15), rng.uniform(1.5, 4)))
        if rng.random() < (0.85 if hot else 0.2):
            sessions.append((rng.uniform(21, 23.5), rng.uniform(4, 8)))
        events = []
        for start_h, hours in sessions:
            start = midnight + start_h * 3600
            end = start + hours * 3600
            if self.inverter:
                events.append(Event(start, end, 1.0))
                continue
            t = start
            while t < end:  # thermostat cycling
                on = rng.uniform(600, 1200)
                events.append(Event(t, min(t + on, end), 1.0))
                t += on + rng.uniform(300, 600)
        return events

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        ev = self.active(t)
        if ev is None:
            return 0.0, 0.0
        since = t - ev.start
        if self.inverter:  # pull-down at full power for ~15 min, then modulate around 45 %
            pull = math.exp(-since / 900)
            p = self.rated * (0.45 + 0.55 * pull + _wobble(self.ripple, t) * (1 - pull))
            pf = self.pf
        elif since < 1.0:
            p, pf = self.rated * 2.5, 0.5
        else:
            p, pf = self.rated, self.pf
        return p, p * math.tan(math.acos(pf))


class Lighting(Appliance):
    """LED lamps (9-15 W, PF ~0.9) switched on and off one by one, mostly in the evening."""

    name = "lighting"

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        super().__init__(seed, clock)
        rng = random.Random(f"{seed}/{self.name}")
        self.lamps = [rng.choice((9.0, 9.0, 12.0, 15.0)) for _ in range(rng.randint(4, 9))]
        self.pf = 0.9
        self._step_cache: dict[int, tuple[list[float], list[float]]] = {}

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        events = []
        for watts in self.lamps:
            if rng.random() < 0.3:  # early morning, before sunrise
                start = midnight + rng.uniform(5.3, 6.5) * 3600
                events.append(Event(start, start + rng.uniform(600, 2400), watts))
            t = midnight + rng.uniform(17.3, 19.5) * 3600
            stop = midnight + rng.uniform(21.5, 24.0) * 3600
            while t < stop:  # a lamp goes on and off through the evening
                on = rng.uniform(900, 5400)
                events.append(Event(t, min(t + on, stop), watts))
                t += on + rng.uniform(300, 2400)
        return events

    def _steps(self, day: int) -> tuple[list[float], list[float]]:
        """The day's total lamp power as a step function: change times and the power from each time on."""
        cached = self._step_cache.get(day)
        if cached is None:
            _, events = self._events(day)
            changes = sorted([(e.start, e.level) for e in events] + [(e.end, -e.level) for e in events])
            times, totals, total = [], [], 0.0
            for when, delta in changes:
                total = max(0.0, total + delta)
                times.append(when)
                totals.append(total)
            cached = (times, totals)
            if len(self._step_cache) > 8:
                self._step_cache.pop(min(self._step_cache))
            self._step_cache[day] = cached
        return cached

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        # several lamps (events) overlap, so this one sums them; lamps never stay on past midnight
        times, totals = self._steps(self.clock.day(t))
        i = bisect.bisect_right(times, t) - 1
        p = totals[i] if i >= 0 else 0.0
        return p, p * math.tan(math.acos(self.pf))


class Standby(Appliance):
    """Always-on electronics (router, TV and microwave standby, chargers): 5-20 W at a poor PF."""

    name = "standby"

    def __init__(self, seed: int | str, clock: LocalClock) -> None:
        super().__init__(seed, clock)
        rng = random.Random(f"{seed}/{self.name}")
        self.base = rng.uniform(5, 20)
        self.pf = rng.uniform(0.45, 0.6)
        self.wobble = _sines(rng, 2, (600, 7200), 0.1)

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        p = self.base * (1 + _wobble(self.wobble, t))
        return p, p * math.tan(math.acos(self.pf))


class LocalClock:
    """Maps Unix seconds to local calendar days (proleptic ordinals) and back, with a small cache."""

    def __init__(self, tz: str = TIMEZONE) -> None:
        self.tz = ZoneInfo(tz)
        self._lo = 0.0
        self._hi = -1.0
        self._day = 0
        self._midnights: dict[int, float] = {}

    def day(self, t: float) -> int:
        if not self._lo <= t < self._hi:
            self._day = dt.datetime.fromtimestamp(t, self.tz).date().toordinal()
            self._lo, self._hi = self.midnight(self._day), self.midnight(self._day + 1)
        return self._day

    def midnight(self, day: int) -> float:
        m = self._midnights.get(day)
        if m is None:
            d = dt.date.fromordinal(day)
            m = dt.datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp()
            self._midnights[day] = m
        return m


class Household:
    """One dwelling's supply and loads. ``sample(t)`` is a pure function of ``t`` (Unix seconds) and the seed."""

    def __init__(
        self,
        seed: int | str = 0,
        nominal_v: int = 127,
        *,
        tz: str = TIMEZONE,
        appliances: tuple[type[Appliance], ...] = (Refrigerator, ElectricShower, AirConditioner, Lighting, Standby),
        generators: tuple[Appliance, ...] = (),
    ) -> None:
        """``generators``: sources behind the meter (``sim.solar.PvSystem``), whose power is negative."""
        if nominal_v not in SUPPORTED_VOLTAGES:
            raise ValueError(f"nominal voltage must be one of {SUPPORTED_VOLTAGES}, not {nominal_v}")
        self.seed = seed
        self.nominal_v = float(nominal_v)
        self.clock = LocalClock(tz)
        self.appliances = [cls(seed, self.clock) for cls in appliances]
        self.generators = list(generators)
        rng = random.Random(f"{seed}/supply")
        self.source_ratio = rng.uniform(1.0, 1.03)  # transformer tap: slightly above nominal at no load
        # service drop + internal wiring: a few volts at full load, more on a weak 127 V line
        self.line_ohm = rng.uniform(0.08, 0.15) * (nominal_v / 127) ** 2
        self.v_wobble = _sines(rng, 3, (120, 3600), 0.01)
        self.f_wobble = _sines(rng, 4, (20, 1200), 0.03)

    def _source_v(self, t: float) -> float:
        hour = (t - self.clock.midnight(self.clock.day(t))) / 3600
        peak = 0.025 * math.exp(-(((hour - 19.5) / 2.0) ** 2))  # the feeder sags at the evening peak
        return self.nominal_v * (self.source_ratio - peak + _wobble(self.v_wobble, t))

    def sample(self, t: float) -> Sample:
        """The supply and total load at Unix time ``t`` (seconds)."""
        v_src = self._source_v(t)
        ratio = v_src / self.nominal_v
        p = q = gen = 0.0
        for appliance in self.appliances:
            ap, aq = appliance.power(t, ratio)
            p += ap
            q += aq
        for generator in self.generators:
            gp, gq = generator.power(t, ratio)
            gen += gp  # negative: power flowing out to the grid
            q += gq
        # one fixed-point step for the line drop: V = Vsrc - R*I, with resistive loads following V²; while the
        # house exports, current flows the other way and the voltage at the meter rises instead
        s = math.hypot(p + gen, q)
        v = v_src - self.line_ohm * math.copysign(s, p + gen) / v_src
        scale = (v / v_src) ** 2
        p = p * scale + gen  # an inverter injects its power whatever the voltage
        q *= scale
        s = math.hypot(p, q)
        i = s / v
        pf = p / s if s > 0 else 1.0
        freq = NOMINAL_FREQ + _wobble(self.f_wobble, t)
        return Sample(v, i, p, s, pf, freq)

    def power(self, t: float) -> float:
        """Active power at ``t``, W, negative while exporting (what the energy registers integrate)."""
        return self.sample(t).p
