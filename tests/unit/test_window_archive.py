"""Emitted windows move to the archive inside the unit's value, and come back for late events.

The archive only changes where emitted windows are kept: every sequence of events and watermarks
must emit exactly what the plain open-windows layout (``close`` over one dict) emits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from finops_app.core.windows import (
    WindowSpec,
    accept,
    add,
    all_windows,
    archive_of,
    close,
    next_due,
    reopen,
    settle,
    settle_due,
)

SPEC = WindowSpec(size_ms=300_000, lateness_ms=60_000, retention_ms=3_600_000)


def unit() -> dict[str, Any]:
    return {"w": {}}


def feed(state: dict[str, Any], ts: int, amount: str, wm: int) -> None:
    key = accept(SPEC, state["w"], ts, wm)
    assert key is not None
    reopen(SPEC, state, "w", [key])
    add(state["w"], key, cost=Decimal(amount))


def test_emitted_windows_leave_the_open_ones_and_keep_their_totals() -> None:
    state = unit()
    for i in range(6):  # six windows, 0 .. 25 min
        feed(state, i * 300_000 + 5, f"{i + 1}.5", 0)
    closed = settle(SPEC, state, "w", 5 * 300_000 + 60_000)  # the first five close
    assert [c.start_ms for c in closed] == [i * 300_000 for i in range(5)]
    assert list(state["w"]) == ["1500000"]  # only the open window stays decoded
    archived = archive_of(state, "w")
    assert sorted(archived, key=int) == [str(i * 300_000) for i in range(5)]
    assert archived["0"] == {"c": "1.5", "nc": 1, "v": "0", "nv": 0, "rev": 1, "dirty": False}
    assert isinstance(state["wa"], str)  # one string field: decoded only when a window moves
    assert len(all_windows(state, "w")) == 6


def test_a_late_event_reopens_its_archived_window_with_the_full_totals() -> None:
    state = unit()
    feed(state, 10, "5", 0)
    feed(state, 300_010, "1", 0)
    (first,) = settle(SPEC, state, "w", 360_000)
    assert (first.cost, first.revision) == (Decimal("5"), 1)
    assert "0" not in state["w"]
    feed(state, 20, "2.5", 360_000)  # late for window 0, within retention
    assert state["w"]["0"]["c"] == "7.5"
    assert "0" not in archive_of(state, "w")
    (fix,) = settle(SPEC, state, "w", 360_001)
    assert (fix.start_ms, fix.cost, fix.cost_events, fix.revision, fix.late) == (
        0,
        Decimal("7.5"),
        2,
        2,
        True,
    )
    assert archive_of(state, "w")["0"]["rev"] == 2 and "0" not in state["w"]


def test_archived_windows_expire_and_settle_due_says_when() -> None:
    state = unit()
    feed(state, 10, "1", 0)
    settle(SPEC, state, "w", 360_000)
    expire = SPEC.expire_at(0)
    assert state["wx"] == expire
    assert settle_due(SPEC, state, "w") == expire  # nothing open: the archive's expiry
    feed(state, 600_000, "1", 360_000)
    assert settle_due(SPEC, state, "w") == SPEC.close_at(600_000)
    (late,) = settle(SPEC, state, "w", expire)  # window 0 expires; window 600,000 closes
    assert late.start_ms == 600_000
    assert list(archive_of(state, "w")) == ["600000"] and state["wx"] == SPEC.expire_at(600_000)
    assert settle(SPEC, state, "w", SPEC.expire_at(600_000)) == []
    assert "wa" not in state and "wx" not in state  # all expired: the archive is gone


def test_a_value_from_before_the_archive_is_moved_over() -> None:
    old = {"w": {}}
    add(old["w"], "0", cost=Decimal("3"))
    add(old["w"], "300000", cost=Decimal("4"))
    close(SPEC, old["w"], 360_000)  # the old layout: window 0 emitted, kept among the open ones
    assert settle(SPEC, old, "w", 360_000) == []  # nothing new to emit ...
    assert list(old["w"]) == ["300000"] and list(archive_of(old, "w")) == ["0"]  # ... but archived


events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # event time, in 1-minute steps
        st.integers(min_value=1, max_value=500),  # cents
        st.integers(min_value=0, max_value=3),  # how far the watermark moves after it, in minutes
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_the_archive_emits_exactly_what_the_open_layout_emits(seq: list[tuple[int, int, int]]) -> None:
    spec = WindowSpec(size_ms=300_000, lateness_ms=60_000, retention_ms=900_000)
    plain: dict[str, Any] = {}
    state = unit()
    wm = 0
    for minute, cents, step in seq:
        ts = minute * 60_000
        key = accept(spec, plain, ts, wm)
        if key is not None:  # past retention: refused by both
            add(plain, key, cost=Decimal(cents) / 100)
            reopen(spec, state, "w", [key])
            add(state["w"], key, cost=Decimal(cents) / 100)
        wm += step * 60_000
        assert close(spec, plain, wm) == settle(spec, state, "w", wm)
        assert all_windows(state, "w") == plain
        want = next_due(spec, plain)
        got = settle_due(spec, state, "w")
        # the archive may be due earlier than the plain layout's next close (its expiry), never later
        assert want is None or (got is not None and got <= want)


def test_the_table_inspector_lists_archived_windows_too() -> None:
    from finops_app.inspect_tables import window_rows

    state = unit()
    feed(state, 10, "1", 0)
    feed(state, 300_010, "2", 0)
    settle(SPEC, state, "w", 360_000)  # window 0 archived, 300,000 open
    rows = window_rows("ecommerce", {**state, "r": {}})
    assert [(r["window_start"], r["cost"], r["pending"]) for r in rows] == [
        ("1970-01-01T00:00:00.000Z", "1", False),
        ("1970-01-01T00:05:00.000Z", "2", True),
    ]
