"""Budgets: month-to-date spend per business unit in, burn, forecast and BudgetAlert dicts out.

A budget is a monthly amount per business unit (``FINOPS_BUDGETS``). Months are calendar months in
UTC; bounds are epoch milliseconds, the end exclusive (the first instant of the next month).

Alerts, each sent at most once per unit and month:

- ``burn`` at 50, 80 and 100 %: month-to-date spend reached that share of the budget;
- ``forecast`` at 100 %: the linear projection of month-end spend reaches the budget while actual
  spend is still below it (once spend has crossed the budget, the ``burn`` 100 % alert says more).

The forecast extrapolates the month-to-date burn rate linearly to the month's end. It is None during
the first 24 hours of a month (``MIN_FORECAST_MS``): a few hours of spend, a batch of daily charges
landing at midnight, say, would project wildly. The caller keeps the list of keys already sent
(``alert_key``) with the unit's month and passes it back in.

Pure functions: no Faust, no I/O; money is Decimal throughout.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from finops_app.core.money import q4s
from finops_app.core.validate import iso

BURN_THRESHOLDS = (50, 80, 100)
FORECAST_THRESHOLD = 100
MIN_FORECAST_MS = 24 * 3_600_000
_NS = uuid.UUID("0b9e3f4a-7c21-5e6d-8f10-2a4c6e8b0d13")


def month_bounds(ts_ms: int) -> tuple[int, int, str]:
    """(start_ms, end_ms exclusive, ``YYYY-MM``) of the UTC calendar month holding ``ts_ms``."""
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
    start = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    end = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1000, int(end.timestamp()) * 1000, f"{dt.year:04d}-{dt.month:02d}"


def month_start_ms(month: str) -> int:
    """The first millisecond (UTC) of ``YYYY-MM``."""
    return int(datetime(int(month[:4]), int(month[5:7]), 1, tzinfo=UTC).timestamp()) * 1000


def burn(spent: Decimal, budget: Decimal) -> Decimal | None:
    """Spent as a fraction of the budget (``Decimal('0.8')`` is 80 %); None without a positive budget."""
    if budget <= 0:
        return None
    return spent / budget


def forecast_month_end(spent: Decimal, now_ms: int, month_start_ms: int, month_end_ms: int) -> Decimal | None:
    """Month-end spend at the month-to-date burn rate; None in the month's first 24 hours.

    At or after the month's end the forecast is the spend itself.
    """
    elapsed = min(now_ms, month_end_ms) - month_start_ms
    if elapsed < MIN_FORECAST_MS:
        return None
    return spent * Decimal(month_end_ms - month_start_ms) / Decimal(elapsed)


def alert_key(kind: str, threshold: int) -> str:
    """The key stored in ``already_sent``: ``burn:80``, ``forecast:100``."""
    return f"{kind}:{threshold}"


def due_alerts(
    budget: Decimal, spent: Decimal, forecast: Decimal | None, already_sent: list[str]
) -> list[tuple[str, int]]:
    """(kind, threshold percent) of every alert now due and not in ``already_sent``, lowest first."""
    if budget <= 0:
        return []
    due = [("burn", t) for t in BURN_THRESHOLDS if spent * 100 >= budget * t]
    if forecast is not None and spent < budget and forecast * 100 >= budget * FORECAST_THRESHOLD:
        due.append(("forecast", FORECAST_THRESHOLD))
    sent = set(already_sent)
    return [(kind, t) for kind, t in due if alert_key(kind, t) not in sent]


def alert_id(business_unit: str, month: str, kind: str, threshold: int) -> str:
    """Deterministic: the same unit, month, kind and threshold always give the same id."""
    return str(uuid.uuid5(_NS, f"{business_unit}/{month}/{kind}/{threshold}"))


def alert_record(
    business_unit: str,
    month: str,
    kind: str,
    threshold: int,
    *,
    budget: Decimal,
    spent: Decimal,
    forecast: Decimal | None,
    now_ms: int,
) -> dict[str, Any]:
    """BudgetAlert field dict; ``forecast`` is ``""`` when there is none yet."""
    return {
        "alert_id": alert_id(business_unit, month, kind, threshold),
        "business_unit": business_unit,
        "month": month,
        "budget": q4s(budget),
        "spent": q4s(spent),
        "forecast": "" if forecast is None else q4s(forecast),
        "threshold_percent": threshold,
        "kind": kind,
        "timestamp": iso(now_ms),
    }
