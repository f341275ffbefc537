"""Daily consumption forecast with a backtest against the seasonal-naive baseline.

Household and building consumption follows the week: a Monday looks like other Mondays. Two forecasters:

* **baseline — seasonal naive**: tomorrow = the same weekday last week (``y[t-7]``);
* **method — weighted weekly profile**: the same weekday over the last ``K`` weeks, weighted ``β^(k-1)``
  (recent weeks count more), rescaled by the level of the last 7 days relative to the same weighted weeks.
  Averaging several weeks cancels most day-to-day noise, which seasonal-naive copies verbatim.

The backtest rolls the origin over the last weeks of history (train on everything before the origin, predict
7 days) and reports both mean absolute errors; ``skill = 1 − MAE_method / MAE_baseline`` (> 0 = better). The
method's backtest residuals give the interval: per day ±z·σ, for a sum of n days ±z·σ·√n (z = 1,2816 for
80 %), floored at 0.

A day without data is ``None`` in the history, a gap and not 0 kWh: the profile averages the weeks that have that
weekday, seasonal naive reaches back to the latest week that has it, and the backtest scores only days with data.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Sequence
from typing import Final

import msgspec

Z80: Final = 1.2816
WEEKS: Final = 6
BETA: Final = 0.7
MIN_HISTORY_DAYS: Final = 14


History = Sequence[float | None]
"""Daily kWh, oldest first; None for a day without data."""


def _known(history: History) -> list[float]:
    return [v for v in history if v is not None]


def seasonal_naive(history: History, horizon: int) -> list[float]:
    """``y[t] = y[t-7]`` (the latest earlier week with data that weekday), recursively past the first week."""
    series = list(history)
    known = _known(history)
    for _ in range(horizon):
        same = next((series[i] for i in range(len(series) - 7, -1, -7) if series[i] is not None), None)
        series.append(same if same is not None else (known[-1] if known else 0.0))
    return [v or 0.0 for v in series[len(history):]]


def weekly_profile(history: History, horizon: int, *, weeks: int = WEEKS, beta: float = BETA) -> list[float]:
    """Weighted mean of the same weekday over the last ``weeks`` weeks, times a recent-level factor."""
    n = len(history)
    if n < 7:
        known = _known(history)
        mean = sum(known) / len(known) if known else 0.0
        return [mean] * horizon

    def profile(t: int, series: Sequence[float | None]) -> float | None:
        num = den = 0.0
        for k in range(1, weeks + 1):
            i = t - 7 * k
            if i < 0:
                break
            v = series[i]
            if v is None:
                continue
            w = beta ** (k - 1)
            num += w * v
            den += w
        return num / den if den else None

    # Level: last 7 days against what the profile would have said for them (clamped, to stay robust).
    level = 1.0
    if n >= 14:
        pairs = [(history[t], profile(t, history)) for t in range(n - 7, n)]
        recent = sum(y for y, p in pairs if y is not None and p is not None)
        expected = sum(p for y, p in pairs if y is not None and p is not None)
        if expected > 0:
            level = min(max(recent / expected, 0.8), 1.25)
    fallback = _known(history)
    mean = sum(fallback) / len(fallback) if fallback else 0.0
    series: list[float | None] = list(history)
    out: list[float] = []
    for h in range(horizon):
        base = profile(n + h, series)
        value = (mean if base is None else base) * level
        series.append(value / level if level else value)  # later steps reuse the unscaled profile
        out.append(max(value, 0.0))
    return out


class Backtest(msgspec.Struct):
    method: str
    baseline: str
    folds: int
    days: int
    mae_method_kwh: float
    mae_baseline_kwh: float
    skill: float
    """1 − MAE_method / MAE_baseline: 0,25 means 25 % less error than seasonal naive."""
    residual_sd_kwh: float


def backtest(history: History, *, horizon: int = 7, max_folds: int = 8) -> Backtest | None:
    """Rolling-origin backtest over the last ``max_folds`` weeks; None with too little history."""
    n = len(history)
    origins = [o for o in range(n - horizon, MIN_HISTORY_DAYS - 1, -horizon)][:max_folds]
    if not origins:
        return None
    err_m: list[float] = []
    err_b: list[float] = []
    residuals: list[float] = []
    for o in origins:
        train, test = history[:o], history[o:o + horizon]
        pm, pb = weekly_profile(train, len(test)), seasonal_naive(train, len(test))
        for y, a, b in zip(test, pm, pb, strict=True):
            if y is None:  # a gap has no error to score
                continue
            err_m.append(abs(y - a))
            err_b.append(abs(y - b))
            residuals.append(y - a)
    if not err_m:
        return None
    mae_m, mae_b = sum(err_m) / len(err_m), sum(err_b) / len(err_b)
    return Backtest(
        method=f"perfil semanal ponderado ({WEEKS} semanas, β={BETA})", baseline="sazonal ingênuo (mesmo dia da "
        "semana anterior)", folds=len(origins), days=len(err_m), mae_method_kwh=round(mae_m, 4),
        mae_baseline_kwh=round(mae_b, 4), skill=round(1 - mae_m / mae_b, 4) if mae_b > 0 else 0.0,
        residual_sd_kwh=round(statistics.pstdev(residuals) if len(residuals) > 1 else 0.0, 4),
    )


class DayForecast(msgspec.Struct):
    date: str
    kwh: float
    low: float
    high: float


class Total(msgspec.Struct):
    kwh: float
    low: float
    high: float
    days: int


class Forecast(msgspec.Struct):
    days: list[DayForecast]
    next_7_days: Total
    rest_of_month: Total
    """From the day after ``today`` through the last day of its month."""
    backtest: Backtest | None
    interval: str = "80 %"


def _total(values: Sequence[float], sd: float) -> Total:
    s = sum(values)
    half = Z80 * sd * math.sqrt(len(values))
    return Total(kwh=round(s, 3), low=round(max(s - half, 0.0), 3), high=round(s + half, 3), days=len(values))


def forecast_daily(history: History, last_day: dt.date) -> Forecast:
    """Forecast the days after ``last_day`` (the last complete day in ``history``) through 7 days and the end of
    that month (or of the next, if the month ends within the week)."""
    month_end = (last_day.replace(day=1) + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    rest = (month_end - last_day).days
    if rest == 0:  # last_day is the month's last day: "rest of month" is the next month
        nxt = last_day + dt.timedelta(days=1)
        rest = ((nxt.replace(day=1) + dt.timedelta(days=32)).replace(day=1) - nxt).days
    horizon = max(7, rest)
    bt = backtest(history)
    known = _known(history)
    sd = bt.residual_sd_kwh if bt else (statistics.pstdev(known) if len(known) > 1 else 0.0)
    values = weekly_profile(history, horizon)
    days = [DayForecast(date=(last_day + dt.timedelta(days=i + 1)).isoformat(), kwh=round(v, 3),
                        low=round(max(v - Z80 * sd, 0.0), 3), high=round(v + Z80 * sd, 3))
            for i, v in enumerate(values)]
    return Forecast(days=days, next_7_days=_total(values[:7], sd), rest_of_month=_total(values[:rest], sd),
                    backtest=bt)
