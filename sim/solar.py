"""Rooftop photovoltaic generation, as a pure function of time (seeded), for solar households.

Millions of Brazilian homes run micro-generation under the SCEE: the inverter feeds the house first and exports
the rest, so the meter at the service entrance sees power flowing in at night and out around noon. The
:class:`Household` subtracts a :class:`PvSystem`'s output from its loads, which gives exactly that signed net.

Why this model: the tests and the demo need a believable day shape and day-to-day variation, not an irradiance
study. So the panel is orientation-free (it sees global horizontal irradiance), the sky is Haurwitz's clear-sky
model — GHI = 1098 cos(z) exp(-0.057 / cos(z)) W/m², which needs only the sun's zenith angle z — and the zenith
comes from the declination and the hour angle at the site's latitude, with local clock time standing in for solar
time (Brasília time is within half an hour of solar time across the South-East). Clouds are seeded events per
local day: the day draws how cloudy it is, then cloud passages of a few minutes, each dimming the array to a
fraction of clear sky. Output = kWp x GHI / 1000 W/m² x performance ratio (inverter, heat, soiling).

Like the appliances in ``sim.loads``, everything is drawn from ``random.Random(f"{seed}/pv/{day}")``, so
:meth:`PvSystem.power` is a pure function of the instant and a test can integrate it independently.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Final

from sim.loads import Appliance, Event, Household, LocalClock

LATITUDE_DEG: Final = -23.5
"""São Paulo, on the Tropic of Capricorn."""
PERFORMANCE_RATIO: Final = 0.8
"""AC energy out per kWh of rated DC irradiance: inverter, cable and heat losses, soiling."""
CLEAR_SKY_GHI_W_M2: Final = 1098.0
"""Haurwitz's constant: clear-sky global horizontal irradiance at zenith, W/m² (before the air-mass term)."""


def clear_sky_ghi(cos_zenith: float) -> float:
    """Haurwitz clear-sky global horizontal irradiance, W/m²; 0 with the sun below the horizon."""
    if cos_zenith <= 0.0:
        return 0.0
    return CLEAR_SKY_GHI_W_M2 * cos_zenith * math.exp(-0.057 / cos_zenith)


def cos_zenith(day_of_year: int, local_hour: float, latitude_deg: float = LATITUDE_DEG) -> float:
    """Cosine of the sun's zenith angle at a local clock hour (taken as solar time)."""
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + day_of_year) / 365)
    hour_angle = math.radians(15.0 * (local_hour - 12.0))
    lat = math.radians(latitude_deg)
    return math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)


class PvSystem(Appliance):
    """A grid-tied PV array of ``kwp`` kWp behind an inverter at PF 1. ``power`` is negative: generation."""

    name = "pv"

    def __init__(self, seed: int | str, clock: LocalClock, kwp: float = 3.0) -> None:
        if kwp <= 0:
            raise ValueError("a PV system needs a positive kWp")
        super().__init__(seed, clock)
        self.kwp = kwp

    def _day(self, day: int, midnight: float, rng: random.Random) -> list[Event]:
        """Cloud passages over the day's daylight hours; ``level`` is the fraction of clear sky left."""
        cloudiness = rng.choice((0.0, 0.0, 0.15, 0.4, 0.8))  # clear days are the most common
        events: list[Event] = []
        t = midnight + 6 * 3600.0
        while t < midnight + 18 * 3600.0:
            clear_gap = rng.expovariate(1.0 / (3600.0 * (1.05 - cloudiness)))
            t += clear_gap
            length = rng.uniform(60.0, 600.0 + 2400.0 * cloudiness)
            if rng.random() < 0.2 + 0.8 * cloudiness:
                events.append(Event(t, t + length, rng.uniform(0.15, 0.7)))
            t += length
        return events

    def clear_sky_w(self, t: float) -> float:
        """AC output under a clear sky at ``t``, W (positive)."""
        day = self.clock.day(t)
        hour = (t - self.clock.midnight(day)) / 3600.0
        day_of_year = dt.date.fromordinal(day).timetuple().tm_yday
        ghi = clear_sky_ghi(cos_zenith(day_of_year, hour))
        return self.kwp * ghi * PERFORMANCE_RATIO

    def power(self, t: float, v_ratio: float) -> tuple[float, float]:
        """(P W, Q var): generation as negative active power; the inverter runs at PF 1 and ignores V."""
        cloud = self.active(t)
        w = self.clear_sky_w(t) * (cloud.level if cloud else 1.0)
        return -w, 0.0


def solar_household(seed: int | str = 0, nominal_v: int = 127, kwp: float = 3.0) -> Household:
    """A :class:`Household` with a ``kwp`` PV array behind the meter: it imports at night and exports at noon."""
    return Household(seed, nominal_v, generators=(PvSystem(seed, LocalClock(), kwp),))
