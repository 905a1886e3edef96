"""Window assignment, close-by-watermark, late corrections and retention (core.windows)."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from finops_app.core.windows import WindowSpec, accept, add, close, next_due, roi

SPEC = WindowSpec(size_ms=300_000, lateness_ms=60_000, retention_ms=3_600_000)


@given(st.integers(min_value=0, max_value=4_000_000_000_000), st.integers(min_value=1, max_value=86_400_000))
def test_every_timestamp_lands_in_exactly_one_window(ts: int, size: int) -> None:
    spec = WindowSpec(size, 0, 0)
    start = spec.start(ts)
    assert start <= ts < start + size
    assert start % size == 0


def test_window_closes_only_after_end_plus_lateness() -> None:
    w: dict = {}
    add(w, accept(SPEC, w, 1_000, 0), cost=Decimal("1.10"))
    add(w, accept(SPEC, w, 299_999, 0), cost=Decimal("2.20"))
    assert close(SPEC, w, 359_999) == []
    (c,) = close(SPEC, w, 360_000)
    assert (c.start_ms, c.end_ms, c.cost, c.cost_events, c.revision, c.late) == (
        0,
        300_000,
        Decimal("3.30"),
        2,
        1,
        False,
    )
    assert close(SPEC, w, 999_999) == []  # emitted once


def test_late_event_emits_a_correction_with_next_revision() -> None:
    w: dict = {}
    add(w, accept(SPEC, w, 10, 0), cost=Decimal("5"))
    close(SPEC, w, 400_000)
    key = accept(SPEC, w, 20, 400_000)
    assert key == "0"
    add(w, key, cost=Decimal("0.5"))
    (c,) = close(SPEC, w, 400_000)
    assert c.cost == Decimal("5.5") and c.revision == 2 and c.late


def test_event_past_retention_is_refused_and_expired_windows_dropped() -> None:
    w: dict = {}
    add(w, accept(SPEC, w, 10, 0), cost=Decimal("1"))
    close(SPEC, w, 400_000)
    far = 300_000 + 3_600_000
    assert accept(SPEC, w, 10, far) is None
    close(SPEC, w, far)
    assert w == {}


@given(st.lists(st.tuples(st.integers(0, 10_000_000), st.integers(0, 10**6)), min_size=1, max_size=60))
def test_totals_equal_sum_of_inputs(events: list[tuple[int, int]]) -> None:
    w: dict = {}
    for ts, cents in events:
        add(w, accept(SPEC, w, ts, 0), cost=Decimal(cents) / 100)
    closed = close(SPEC, w, 20_000_000)
    assert sum((c.cost for c in closed), Decimal(0)) == sum((Decimal(c) / 100 for _, c in events), Decimal(0))
    assert sum(c.cost_events for c in closed) == len(events)


def test_next_due_is_earliest_close() -> None:
    w: dict = {}
    add(w, accept(SPEC, w, 700_000, 0), cost=Decimal("1"))
    add(w, accept(SPEC, w, 10, 0), cost=Decimal("1"))
    assert next_due(SPEC, w) == 360_000
    assert next_due(SPEC, {}) is None


def test_roi() -> None:
    assert roi(Decimal("10"), Decimal("10")) == 0.0
    assert roi(Decimal("10"), Decimal("25")) == 1.5
    assert roi(Decimal("0"), Decimal("25")) is None
