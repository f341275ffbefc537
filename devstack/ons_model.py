"""A seeded model of the SIN (Brazil's interconnected grid) for the fake ONS: hourly generation by source, load and
interchange per subsystem, and the half-hourly marginal cost, with plausible daily and seasonal shapes.

Not a forecast of anything: it gives tests and the demo numbers shaped like ONS's, so that a day has a load curve
with its evening peak, solar peaks at 11 h local time and is zero at night, wind in the Nordeste blows hardest at
night and in the "safra dos ventos" (July to November), hydro in the Norte swells in the wet season (January to
May), thermal runs more in the dry season, and the subsystems' interchanges add up to a small international
exchange (the SIN closes: generation − load − interchange is zero everywhere). Capacities grow across the years
(solar and wind steeply), so older years look older.

Every value is a function of (seed, local date, hour): the same seed always gives the same files. The literal
rows published in the research notes (docs/ons.md cites them) override the model where they apply, so the fake
serves them byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from dataclasses import dataclass
from typing import Final

SUBSYSTEMS: Final = ("SE", "S", "NE", "N")
FIELDS: Final = ("hidraulica", "termica", "eolica", "solar", "carga", "intercambio")

_LOAD_BASE: Final = {"SE": 41000.0, "S": 12500.0, "NE": 12800.0, "N": 7600.0}
_SOLAR_CAP: Final = {"SE": 6500.0, "S": 900.0, "NE": 9000.0, "N": 700.0}
_WIND_CAP: Final = {"SE": 30.0, "S": 1300.0, "NE": 11500.0, "N": 450.0}
_THERMAL_BASE: Final = {"SE": 5200.0, "S": 1700.0, "NE": 1700.0, "N": 1500.0}
_HYDRO_BASE: Final = {"SE": 23000.0, "S": 8500.0, "NE": 3600.0, "N": 9500.0}
# Hour-of-day load factors (local time): night trough, working-day plateau, evening peak.
_LOAD_SHAPE: Final = (0.86, 0.83, 0.81, 0.80, 0.80, 0.82, 0.86, 0.91, 0.96, 1.00, 1.03, 1.05,
                      1.05, 1.06, 1.07, 1.07, 1.06, 1.05, 1.07, 1.09, 1.08, 1.03, 0.97, 0.91)
_WET: Final = (1.55, 1.65, 1.7, 1.5, 1.25, 0.95, 0.75, 0.6, 0.5, 0.55, 0.75, 1.2)
"""Monthly factor of run-of-river hydro in the Norte (Belo Monte's wet and dry seasons)."""
_CMO_MONTH: Final = (70.0, 60.0, 55.0, 60.0, 95.0, 150.0, 190.0, 240.0, 260.0, 230.0, 160.0, 100.0)

# Literal rows of the research notes: (local wall time, subsystem) -> values that override the model.
LITERAL_BALANCE: Final[dict[tuple[str, str], dict[str, float]]] = {
    ("2026-01-01 00:00:00", "N"): {"hidraulica": 11587.046, "termica": 1864.907, "eolica": 263.019, "solar": 0.0,
                                   "carga": 7622.606, "intercambio": 6094.172},
    # Load of the other three that hour; with N's, the SIN row is exactly 72 695.81.
    ("2026-01-01 00:00:00", "NE"): {"carga": 12887.228},
    ("2026-01-01 00:00:00", "S"): {"carga": 11137.518},
    ("2026-01-01 00:00:00", "SE"): {"carga": 41048.458},
    ("2018-11-04 01:00:00", "SE"): {"hidraulica": 29274.58299999, "termica": 4405.441},
}
LITERAL_LOAD_CURVE: Final[dict[tuple[str, str], float]] = {("2014-10-19 01:00:00", "SE"): 31660.899}


def _seed(*parts: object) -> int:
    """A stable seed from parts (``hash()`` of strings changes between processes)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class DayWeather:
    cloud: dict[str, float]
    wind: dict[str, float]
    hydro: dict[str, float]
    noise: random.Random


class SinModel:
    """The model; ``seed`` picks one of many plausible histories."""

    def __init__(self, seed: int = 1, *, international_mw: float = 150.0) -> None:
        self.seed = seed
        self.international_mw = international_mw

    def _weather(self, day: dt.date) -> DayWeather:
        rnd = random.Random(_seed(self.seed, day.isoformat()))
        return DayWeather(cloud={s: rnd.uniform(0.55, 1.0) for s in SUBSYSTEMS},
                          wind={s: rnd.uniform(0.6, 1.3) for s in SUBSYSTEMS},
                          hydro={s: rnd.uniform(0.9, 1.1) for s in SUBSYSTEMS}, noise=rnd)

    def day(self, day: dt.date) -> list[dict[str, dict[str, float]]]:
        """24 local hours of ``day``: per hour, subsystem -> field -> MWmed."""
        w = self._weather(day)
        return [self._close(dt.datetime(day.year, day.month, day.day, h), self._hour(day, h, w)) for h in range(24)]

    def _hour(self, day: dt.date, hour: int, w: DayWeather) -> dict[str, dict[str, float]]:
        years = day.year - 2026
        month = day.month
        summer = math.cos(2 * math.pi * (month - 1.5) / 12)  # +1 in Jan/Feb, -1 in Jul/Aug
        weekday = (1.0, 1.0, 1.0, 1.0, 1.0, 0.93, 0.86)[day.weekday()]
        sun = max(0.0, math.sin(math.pi * (hour + 0.5 - 6) / 12)) ** 1.3
        night_wind = 1.0 + 0.25 * math.cos(2 * math.pi * (hour - 1) / 24)
        windy_season = 1.0 + 0.35 * math.cos(2 * math.pi * (month - 9) / 12)
        dry = 1.0 + 0.3 * max(0.0, -summer)
        out: dict[str, dict[str, float]] = {}
        for s in SUBSYSTEMS:
            seasonal = 1.0 + (0.06 * summer if s in ("SE", "S") else 0.04 * math.cos(2 * math.pi * (month - 11) / 12))
            load = (_LOAD_BASE[s] * 1.02 ** years * seasonal * weekday * _LOAD_SHAPE[hour]
                    * (1 + w.noise.uniform(-0.01, 0.01)))
            solar = _SOLAR_CAP[s] * 1.35 ** years * sun * w.cloud[s] * (1 - 0.15 * max(0.0, summer))
            wind = (_WIND_CAP[s] * 1.12 ** years * w.wind[s] * windy_season * night_wind
                    * (1 + w.noise.uniform(-0.08, 0.08)))
            thermal = _THERMAL_BASE[s] * 1.01 ** years * dry * (1 + w.noise.uniform(-0.03, 0.03))
            hydro = _HYDRO_BASE[s] * 1.01 ** years * w.hydro[s] * (_WET[month - 1] if s == "N" else 1.0)
            hydro *= 0.97 + 0.06 * _LOAD_SHAPE[hour]  # hydro follows the load through the day
            out[s] = {"hidraulica": hydro, "termica": thermal, "eolica": max(0.0, wind), "solar": solar,
                      "carga": load}
        return out

    def _close(self, wall: dt.datetime, hour_values: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """Apply the literal rows at ``wall`` and close the SIN: the Sudeste's hydro dispatch balances the grid so
        that the four interchanges add up to the international exchange."""
        key = wall.strftime("%Y-%m-%d %H:%M:%S")
        values = {s: dict(v) for s, v in hour_values.items()}
        fixed: set[tuple[str, str]] = set()
        for s in SUBSYSTEMS:
            for field, value in LITERAL_BALANCE.get((key, s), {}).items():
                values[s][field] = value
                fixed.add((s, field))
        for s in SUBSYSTEMS:
            if (s, "intercambio") not in fixed:
                values[s]["intercambio"] = sum(values[s][f] for f in FIELDS[:4]) - values[s]["carga"]
        se = values["SE"]
        if (("SE", "intercambio") not in fixed) and (("SE", "hidraulica") not in fixed):
            se["intercambio"] = self.international_mw - sum(values[s]["intercambio"] for s in SUBSYSTEMS if s != "SE")
            se["hidraulica"] = se["intercambio"] + se["carga"] - se["termica"] - se["eolica"] - se["solar"]
        return values

    def cmo_day(self, day: dt.date) -> list[dict[str, float]]:
        """48 half-hours of ``day``: subsystem -> R$/MWh. The Nordeste decouples (and may go negative) at windy,
        sunny middays; the others move together."""
        rnd = random.Random(_seed(self.seed, "cmo", day.isoformat()))
        base = _CMO_MONTH[day.month - 1] * rnd.uniform(0.8, 1.2)
        windy = rnd.random() < 0.12
        out = []
        for half in range(48):
            hour = half / 2
            shape = 1.35 if 18 <= hour < 21 else 0.8 if 10 <= hour < 15 else 1.0
            common = base * shape * rnd.uniform(0.97, 1.03)
            ne = common * 0.9
            if windy and 10 <= hour < 14:
                ne = -rnd.uniform(1.0, 15.0)
            out.append({"SE": common, "S": common * rnd.uniform(0.99, 1.01), "NE": ne, "N": common * 0.97})
        return out

    def missing_cmo_days(self, year: int) -> set[dt.date]:
        """Four days of each year without CMO rows (ONS's files have a few such gaps)."""
        rnd = random.Random(_seed(self.seed, "cmo-gaps", year))
        start = dt.date(year, 1, 1)
        return {start + dt.timedelta(days=rnd.randrange(0, 360)) for _ in range(4)}
