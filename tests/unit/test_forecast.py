"""core.forecast: least squares trend, weekly seasonality, prediction intervals, backtest."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta
from decimal import Decimal

import pytest

from finops_app.core.forecast import backtest, fit, forecast, mape, seasonal_eligible, t_quantile

D0 = date(2025, 1, 6)  # a Monday


def series(n: int, value, start: date = D0, skip: set[int] | None = None) -> list[tuple[date, Decimal]]:
    return [
        (start + timedelta(days=i), Decimal(str(round(value(i), 6))))
        for i in range(n)
        if not skip or i not in skip
    ]


@pytest.mark.parametrize(
    ("dof", "expected"),
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)],
)
def test_t_quantile_matches_tables(dof: int, expected: float) -> None:
    assert t_quantile(0.975, dof) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, dof) == pytest.approx(-expected, abs=1e-4)
    assert t_quantile(0.5, dof) == 0.0


def test_exact_line_is_recovered_with_calendar_gaps() -> None:
    # days 3 and 10 are missing: x is the calendar day number, so the slope stays exact
    daily = series(20, lambda i: 50 + 3 * i, skip={3, 10})
    fitted = fit(daily, "linear")
    assert fitted.beta[1] == pytest.approx(3.0, abs=1e-9)
    assert fitted.beta[0] == pytest.approx(50.0, abs=1e-9)
    result = forecast(daily, 3, model="linear")
    assert [p[0] for p in result.points] == [D0 + timedelta(days=20 + k) for k in range(3)]
    assert result.points[0][1] == Decimal("110.0000")  # 50 + 3 * 20
    assert result.points[0][2] == result.points[0][1] == result.points[0][3]  # no residuals, no width


def test_linear_interval_is_the_textbook_formula() -> None:
    rng = random.Random(7)
    daily = series(30, lambda i: 200 + 1.5 * i + rng.gauss(0, 4))
    result = forecast(daily, 5, model="linear")
    xs = [float((d - D0).days) for d, _ in daily]
    ys = [float(v) for _, v in daily]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    s = math.sqrt(sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True)) / (n - 2))
    for k, (_, pred, low, high) in enumerate(result.points, 1):
        x0 = 29 + k
        half = t_quantile(0.975, n - 2) * s * math.sqrt(1 + 1 / n + (x0 - mx) ** 2 / sxx)
        assert float(pred) == pytest.approx(a + b * x0, abs=1e-3)
        assert float(high - low) == pytest.approx(2 * half, abs=1e-3)
    widths = [float(h - lo) for _, _, lo, h in result.points]
    assert widths == sorted(widths)  # further from the data, wider


def test_linear_trend_recovered_interval_covers_truth_and_mape_small() -> None:
    rng = random.Random(11)
    truth = lambda i: 1000 + 12 * i  # noqa: E731
    daily = series(60, lambda i: truth(i) + rng.gauss(0, 20))
    result = forecast(daily, 14)
    assert result.slope == pytest.approx(12, abs=0.6)
    assert result.n == 60
    assert result.mape is not None and result.mape < 3.0
    for k, (_, _, low, high) in enumerate(result.points):
        assert low <= Decimal(truth(60 + k)) <= high


def test_interval_coverage_is_near_nominal() -> None:
    rng = random.Random(3)
    hits = trials = 0
    for _ in range(300):
        daily = series(25, lambda i: 100 + 2 * i + rng.gauss(0, 5))
        _, _, low, high = forecast(daily, 1, model="linear").points[0]
        actual = 100 + 2 * 25 + rng.gauss(0, 5)
        hits += float(low) <= actual <= float(high)
        trials += 1
    assert 0.91 <= hits / trials <= 0.99  # a fixed +-10 % band would not track the noise at all


def test_weekly_seasonal_series_uses_the_seasonal_model() -> None:
    rng = random.Random(5)
    weekend = lambda i: 0.55 if (D0 + timedelta(days=i)).weekday() >= 5 else 1.0  # noqa: E731
    daily = series(56, lambda i: (500 + 3 * i) * weekend(i) + rng.gauss(0, 5))
    assert seasonal_eligible(daily)
    result = forecast(daily, 14)
    assert result.model == "seasonal"
    linear_mape = backtest(daily, 7, "linear")
    seasonal_mape = backtest(daily, 7, "seasonal")
    assert linear_mape is not None and seasonal_mape is not None
    assert seasonal_mape < linear_mape / 3
    assert result.mape == seasonal_mape
    # the weekend forecast is well below the weekday forecast
    by_day = {d.weekday(): float(p) for d, p, _, _ in result.points[:7]}
    assert by_day[5] < 0.7 * by_day[2] and by_day[6] < 0.7 * by_day[2]
    assert result.weekday_effects[5] < -150


def test_seasonal_needs_three_full_weeks() -> None:
    assert not seasonal_eligible(series(20, lambda i: 10 + i))
    assert seasonal_eligible(series(21, lambda i: 10 + i))
    assert forecast(series(20, lambda i: 10 + i % 7), 3).model == "linear"


def test_backtest_holds_out_the_last_days() -> None:
    daily = [*series(20, lambda i: 10 + i), (D0 + timedelta(days=20), Decimal(60))]  # last day off the line
    # fit on days 0..19 (exact line) predicts 30 on day 20: error |60 - 30| / 60 = 50 %
    assert backtest(daily, 1, "linear") == pytest.approx(50.0)
    assert backtest(daily, 0) is None
    assert backtest(daily[:3], 3) is None


def test_mape_skips_zero_actuals() -> None:
    assert mape([100.0, 0.0, 50.0], [110.0, 5.0, 40.0]) == pytest.approx(15.0)
    assert mape([0.0], [1.0]) is None


def test_lower_bound_stops_at_zero_for_costs() -> None:
    rng = random.Random(2)
    daily = series(15, lambda i: max(0.0, 30 - 2 * i + rng.gauss(0, 3)))
    result = forecast(daily, 10, model="linear")
    assert all(low >= 0 for _, _, low, _ in result.points)


def test_too_little_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        forecast(series(2, lambda i: 1.0), 3)
    with pytest.raises(ValueError, match="one value per date"):
        fit([(D0, Decimal(1)), (D0, Decimal(2)), (D0 + timedelta(days=1), Decimal(3))])
