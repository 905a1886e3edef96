"""core.budget: month bounds, burn, the linear forecast and alerts that fire once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finops_app.core import budget as b
from finops_app.models import BudgetAlert

DAY = 86_400_000


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("ts", "start", "end", "month", "days"),
    [
        (ms(2024, 2, 15, 12), ms(2024, 2, 1), ms(2024, 3, 1), "2024-02", 29),  # leap year
        (ms(2023, 2, 28, 23, 59, 59), ms(2023, 2, 1), ms(2023, 3, 1), "2023-02", 28),
        (ms(2024, 12, 31, 23, 59, 59) + 999, ms(2024, 12, 1), ms(2025, 1, 1), "2024-12", 31),  # rollover
        (ms(2025, 1, 1), ms(2025, 1, 1), ms(2025, 2, 1), "2025-01", 31),  # the first instant
        (ms(2025, 4, 30, 18), ms(2025, 4, 1), ms(2025, 5, 1), "2025-04", 30),
    ],
)
def test_month_bounds(ts: int, start: int, end: int, month: str, days: int) -> None:
    assert b.month_bounds(ts) == (start, end, month)
    assert (end - start) // DAY == days


@given(st.integers(ms(1990, 1, 1), ms(2100, 1, 1)))
def test_every_instant_lies_in_its_month_and_months_tile(ts: int) -> None:
    start, end, month = b.month_bounds(ts)
    assert start <= ts < end
    assert b.month_bounds(end)[0] == end
    assert b.month_bounds(start - 1)[1] == start
    assert month == datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m")


def test_burn() -> None:
    assert b.burn(Decimal(50), Decimal(100)) == Decimal("0.5")
    assert b.burn(Decimal(120), Decimal(100)) == Decimal("1.2")
    assert b.burn(Decimal(5), Decimal(0)) is None


def test_forecast() -> None:
    start, end, _ = b.month_bounds(ms(2025, 4, 1))  # 30 days
    assert b.forecast_month_end(Decimal(10), start + DAY - 1, start, end) is None  # first day
    assert b.forecast_month_end(Decimal(10), start + DAY, start, end) == Decimal(300)
    assert b.forecast_month_end(Decimal(100), start + 15 * DAY, start, end) == Decimal(200)
    assert b.forecast_month_end(Decimal(100), end + 5 * DAY, start, end) == Decimal(100)


@given(st.decimals(0, 10**6, places=4), st.integers(DAY, 31 * DAY))
def test_forecast_is_never_below_spend(spent: Decimal, elapsed: int) -> None:
    start, end, _ = b.month_bounds(ms(2025, 1, 1))
    forecast = b.forecast_month_end(spent, start + elapsed, start, end)
    assert forecast is not None and forecast >= spent


def run_month(budget: Decimal, spend_by_day: list[tuple[int, Decimal]]) -> list[tuple[int, str, int]]:
    """Feed cumulative (elapsed_ms, spent) points through due_alerts as an agent would."""
    start, end, _ = b.month_bounds(ms(2025, 1, 1))
    sent: list[str] = []
    fired = []
    for elapsed, spent in spend_by_day:
        forecast = b.forecast_month_end(spent, start + elapsed, start, end)
        for kind, threshold in b.due_alerts(budget, spent, forecast, sent):
            sent.append(b.alert_key(kind, threshold))
            fired.append((elapsed, kind, threshold))
    return fired


def test_alerts_fire_once_each_and_forecast_only_after_the_first_day() -> None:
    budget = Decimal(1000)
    points = [
        (3_600_000, Decimal(600)),  # hour 1: burn 50 % at once; forecast not yet meaningful
        (12 * 3_600_000, Decimal(650)),
        (DAY + 1, Decimal(700)),  # day 2: forecast far above the budget
        (2 * DAY, Decimal(800)),
        (3 * DAY, Decimal(900)),
        (4 * DAY, Decimal(1000)),
        (5 * DAY, Decimal(1500)),
    ]
    assert run_month(budget, points) == [
        (3_600_000, "burn", 50),
        (DAY + 1, "forecast", 100),
        (2 * DAY, "burn", 80),
        (4 * DAY, "burn", 100),
    ]


def test_several_thresholds_at_once_and_none_without_budget() -> None:
    assert b.due_alerts(Decimal(100), Decimal(100), Decimal(300), []) == [
        ("burn", 50),
        ("burn", 80),
        ("burn", 100),
    ]  # spend over budget already: the forecast alert adds nothing
    assert b.due_alerts(Decimal(100), Decimal(90), None, ["burn:50"]) == [("burn", 80)]
    assert b.due_alerts(Decimal(0), Decimal(90), Decimal(900), []) == []


@given(st.lists(st.decimals(0, 500, places=2), min_size=1, max_size=40), st.decimals(1, 5000, places=2))
def test_no_alert_ever_fires_twice(increments: list[Decimal], budget: Decimal) -> None:
    spent, points = Decimal(0), []
    for i, inc in enumerate(increments):
        spent += inc
        points.append(((i + 1) * DAY // 2, spent))
    fired = run_month(budget, points)
    keys = [(kind, t) for _, kind, t in fired]
    assert len(keys) == len(set(keys))
    assert {t for kind, t in keys if kind == "burn"} == {
        t for t in b.BURN_THRESHOLDS if spent * 100 >= budget * t
    }


def test_alert_record() -> None:
    rec = b.alert_record(
        "retail",
        "2025-01",
        "burn",
        80,
        budget=Decimal(1000),
        spent=Decimal("812.123456"),
        forecast=None,
        now_ms=ms(2025, 1, 20),
    )
    assert rec["alert_id"] == b.alert_id("retail", "2025-01", "burn", 80)
    assert rec["alert_id"] != b.alert_id("retail", "2025-02", "burn", 80)
    assert rec["alert_id"] != b.alert_id("retail", "2025-01", "burn", 50)
    assert (rec["budget"], rec["spent"], rec["forecast"]) == ("1000.0000", "812.1235", "")
    assert rec["timestamp"] == "2025-01-20T00:00:00.000Z"
    assert BudgetAlert(**rec).to_json_dict() == rec
