"""Daily costs in, a cost forecast with prediction intervals out (pure math, no I/O).

Two models, both ordinary least squares on the calendar day number (a missing day is a gap in
x, not a shifted row as with the article's ROW_NUMBER):

- ``linear``: cost = a + b * day.
- ``seasonal``: the same trend plus one additive effect per day of week (weekday dummies), used
  when at least three full weeks of history exist and, when a holdout backtest can tell, it
  forecasts better than the linear model.

Intervals are real prediction intervals, not the article's fixed +-10 percent: Student-t quantile
times the residual standard error times sqrt(1 + x0' (X'X)^-1 x0), which for the linear model is
the textbook ``sqrt(1 + 1/n + (x - mean(x))^2 / Sxx)``. ``backtest`` holds out the last k days,
fits on the rest and reports the mean absolute percentage error (MAPE) on the held-out days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from finops_app.core.money import q4

Daily = Sequence[tuple[date, Decimal]]
MIN_POINTS = 3
SEASONAL_WEEKS = 3


@dataclass(frozen=True)
class ForecastResult:
    points: list[tuple[date, Decimal, Decimal, Decimal]]  # (date, predicted, lower, upper)
    model: str  # 'linear' | 'seasonal'
    mape: float | None  # backtest MAPE of the chosen model, percent (None: too little history)
    n: int  # days of history fitted
    slope: float = 0.0  # trend per day
    intercept: float = 0.0  # trend value on the first history date
    residual_std: float = 0.0
    confidence: float = 0.95
    weekday_effects: dict[int, float] = field(default_factory=dict)  # 0 = Monday (seasonal only)


@dataclass(frozen=True)
class Fit:
    model: str
    origin: date
    beta: list[float]
    xtx_inv: list[list[float]]
    sse: float
    dof: int
    weekdays: tuple[int, ...]  # weekdays with their own effect (seasonal)

    def design(self, day: date) -> list[float]:
        x = float((day - self.origin).days)
        return [1.0, x] + [1.0 if day.weekday() == wd else 0.0 for wd in self.weekdays]

    def predict(self, day: date) -> float:
        return sum(b * v for b, v in zip(self.beta, self.design(day), strict=True))

    @property
    def residual_std(self) -> float:
        return math.sqrt(self.sse / self.dof) if self.dof > 0 else 0.0

    def interval(self, day: date, confidence: float) -> tuple[float, float, float]:
        """(prediction, lower, upper) of one future day."""
        x0 = self.design(day)
        lev = sum(x0[i] * self.xtx_inv[i][j] * x0[j] for i in range(len(x0)) for j in range(len(x0)))
        pred = self.predict(day)
        half = t_quantile(0.5 + confidence / 2, self.dof) * self.residual_std * math.sqrt(1.0 + lev)
        return pred, pred - half, pred + half


def seasonal_eligible(daily: Daily) -> bool:
    """At least three full weeks: every weekday seen three times over a span of 21+ days."""
    if len(daily) < 7 * SEASONAL_WEEKS:
        return False
    days = [d for d, _ in daily]
    counts = [0] * 7
    for d in days:
        counts[d.weekday()] += 1
    return (max(days) - min(days)).days >= 7 * SEASONAL_WEEKS - 1 and min(counts) >= SEASONAL_WEEKS


def fit(daily: Daily, model: str = "linear") -> Fit:
    """Least squares fit of ``model`` to the (date, cost) series."""
    series = sorted(daily)
    if len({d for d, _ in series}) != len(series):
        raise ValueError("one value per date expected")
    if model not in ("linear", "seasonal"):
        raise ValueError(f"unknown model {model!r}")
    weekdays: tuple[int, ...] = ()
    if model == "seasonal":
        seen = sorted({d.weekday() for d, _ in series})
        weekdays = tuple(seen[1:])  # the first weekday seen is the baseline
    p = 2 + len(weekdays)
    if len(series) < max(MIN_POINTS, p + 1):
        raise ValueError(f"need at least {max(MIN_POINTS, p + 1)} days of history for a {model} forecast")
    origin = series[0][0]
    probe = Fit(model, origin, [], [], 0.0, 0, weekdays)
    rows = [probe.design(d) for d, _ in series]
    ys = [float(v) for _, v in series]
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(p)] for i in range(p)]
    xty = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(p)]
    inv = _invert(xtx)
    beta = [sum(inv[i][j] * xty[j] for j in range(p)) for i in range(p)]
    sse = sum(
        (y - sum(b * v for b, v in zip(beta, r, strict=True))) ** 2 for r, y in zip(rows, ys, strict=True)
    )
    return Fit(model, origin, beta, inv, sse, len(series) - p, weekdays)


def mape(actual: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Mean absolute percentage error in percent, over the days whose actual value is not 0."""
    errors = [abs(a - p) / abs(a) for a, p in zip(actual, predicted, strict=True) if a != 0]
    return 100.0 * sum(errors) / len(errors) if errors else None


def backtest(daily: Daily, holdout_days: int = 7, model: str = "linear") -> float | None:
    """Fit on all but the last ``holdout_days`` days, return the MAPE on those days (or None)."""
    series = sorted(daily)
    if holdout_days <= 0 or len(series) <= holdout_days:
        return None
    train, test = series[:-holdout_days], series[-holdout_days:]
    if model == "seasonal" and not seasonal_eligible(train):
        return None
    try:
        fitted = fit(train, model)
    except (ValueError, ZeroDivisionError):
        return None
    return mape([float(v) for _, v in test], [fitted.predict(d) for d, _ in test])


def forecast(
    daily: Daily, days: int, *, confidence: float = 0.95, model: str = "auto", holdout_days: int = 7
) -> ForecastResult:
    """Forecast the ``days`` days after the last history date, with prediction intervals.

    ``model='auto'`` picks seasonal when three full weeks exist and the backtest does not favour
    linear. Lower bounds stop at 0 when the history has no negative day (costs, not credits).
    """
    series = sorted(daily)
    if days < 0:
        raise ValueError("days must be >= 0")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    if model == "auto":
        model = "linear"
        if seasonal_eligible(series):
            seasonal_mape = backtest(series, holdout_days, "seasonal")
            linear_mape = backtest(series, holdout_days, "linear")
            if seasonal_mape is None or linear_mape is None or seasonal_mape <= linear_mape:
                model = "seasonal"
    fitted = fit(series, model)
    floor = 0.0 if all(v >= 0 for _, v in series) else -math.inf
    last = series[-1][0]
    points = []
    for k in range(1, days + 1):
        day = last + timedelta(days=k)
        pred, low, high = fitted.interval(day, confidence)
        points.append((day, _dec(pred), _dec(max(low, floor)), _dec(high)))
    effects: dict[int, float] = {}
    if model == "seasonal":
        base = next(wd for wd in range(7) if wd not in fitted.weekdays)
        effects = {base: 0.0} | {wd: fitted.beta[2 + i] for i, wd in enumerate(fitted.weekdays)}
    return ForecastResult(
        points=points,
        model=model,
        mape=backtest(series, holdout_days, model),
        n=len(series),
        slope=fitted.beta[1],
        intercept=fitted.beta[0],
        residual_std=fitted.residual_std,
        confidence=confidence,
        weekday_effects=effects,
    )


def _dec(value: float) -> Decimal:
    return q4(Decimal(repr(value)))


def _invert(m: list[list[float]]) -> list[list[float]]:
    """Gauss-Jordan inverse with partial pivoting (the matrices here are at most 8 x 8)."""
    n = len(m)
    a = [[*row, *(1.0 if i == j else 0.0 for j in range(n))] for i, row in enumerate(m)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise ValueError("singular design: the history does not determine the model")
        a[col], a[pivot] = a[pivot], a[col]
        scale = a[col][col]
        a[col] = [v / scale for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0.0:
                factor = a[r][col]
                a[r] = [v - factor * w for v, w in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


# -- Student t -------------------------------------------------------------------------------------


def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom (bisection on the exact CDF)."""
    if dof <= 0:
        return math.inf
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def t_cdf(t: float, dof: float) -> float:
    x = dof / (dof + t * t)
    tail = 0.5 * _betainc(dof / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h
