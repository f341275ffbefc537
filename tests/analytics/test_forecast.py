"""The forecast beats seasonal-naive on a noisy weekly series; intervals and horizons are right."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from backend.analytics.forecast import backtest, forecast_daily, seasonal_naive, weekly_profile

PATTERN = [10.0, 10.5, 10.0, 11.0, 12.0, 15.0, 14.0]


def synthetic(days: int, noise: float, seed: int = 7) -> list[float]:
    rnd = random.Random(seed)
    return [max(PATTERN[i % 7] * (1 + 0.001 * i) + rnd.gauss(0, noise), 0.0) for i in range(days)]


def test_method_beats_seasonal_naive_on_a_noisy_weekly_series() -> None:
    bt = backtest(synthetic(120, 1.5))
    assert bt is not None and bt.folds == 8 and bt.days == 56
    assert bt.mae_method_kwh < bt.mae_baseline_kwh
    assert bt.skill > 0.1  # averaging 6 weeks removes most of the noise seasonal-naive copies


def test_noise_free_weekly_series_is_predicted_exactly_by_both() -> None:
    history = [PATTERN[i % 7] for i in range(42)]
    assert seasonal_naive(history, 7) == PATTERN
    assert [round(v, 9) for v in weekly_profile(history, 7)] == PATTERN
    bt = backtest(history)
    assert bt is not None and bt.mae_method_kwh == 0 and bt.mae_baseline_kwh == 0


def test_horizons_next_week_and_rest_of_month() -> None:
    history = [PATTERN[i % 7] for i in range(42)]
    f = forecast_daily(history, dt.date(2026, 5, 20))
    assert f.days[0].date == "2026-05-21"
    assert f.next_7_days.days == 7 and f.next_7_days.kwh == sum(PATTERN)
    assert f.rest_of_month.days == 11  # 21..31 May
    assert f.rest_of_month.low == f.rest_of_month.kwh == f.rest_of_month.high  # no residual error


def test_interval_widens_with_sqrt_of_days() -> None:
    f = forecast_daily(synthetic(90, 2.0), dt.date(2026, 6, 2))
    assert f.backtest is not None
    sd = f.backtest.residual_sd_kwh
    half7 = f.next_7_days.high - f.next_7_days.kwh
    assert abs(half7 - 1.2816 * sd * 7 ** 0.5) < 0.01
    assert all(d.low <= d.kwh <= d.high for d in f.days)


def test_short_history_has_no_backtest_but_still_forecasts() -> None:
    f = forecast_daily([5.0, 6.0, 7.0], dt.date(2026, 6, 2))
    assert f.backtest is None and f.next_7_days.kwh == 42.0


def test_a_day_without_data_is_a_gap_not_zero() -> None:
    """Six weeks of a flat 10 kWh/day with one day missing (None): the gap does not pull the forecast down, as a
    0 kWh day would, and the backtest scores only days with data."""

    history: list[float | None] = [10.0] * 42
    history[-7] = None  # last week's same weekday as tomorrow
    assert weekly_profile(history, 7) == pytest.approx([10.0] * 7)
    assert seasonal_naive(history, 1) == [10.0]
    bt = backtest(history)
    assert bt is not None and bt.mae_method_kwh == pytest.approx(0.0)
    zeros = [0.0 if v is None else v for v in history]
    assert weekly_profile(zeros, 1)[0] < 10.0
