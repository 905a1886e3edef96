"""Emitted windows move to the archive (its own table key), and come back for late events.

The archive only changes where emitted windows are kept: every sequence of events and watermarks
must emit exactly what the plain open-windows layout (``close`` over one dict) emits.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
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


def agent_step(table: dict[str, Any], batch: list[tuple[int, str]], wm_new: int) -> list[Any]:
    """What the unit agent does with a batch: the unit's state and archive from their two keys,
    events in (a late one copies its window back), settle, then archive, value and watermark written
    in that order."""
    from finops_app.agents.units import load_unit, store_unit

    wm = table.get("wm", 0)
    state = load_unit(table, "u")
    state.setdefault("w", {})
    for ts, amount in batch:
        key = accept(SPEC, state["w"], ts, wm)
        if key is not None:
            reopen(SPEC, state, "w", [key])
            add(state["w"], key, cost=Decimal(amount))
    closed = settle(SPEC, state, "w", wm_new)
    store_unit(table, "u", state)
    table["wm"] = wm_new
    return [(c.start_ms, c.revision, c.cost, c.cost_events) for c in closed]


BATCHES: list[tuple[list[tuple[int, str]], int]] = [
    ([(10, "1"), (300_010, "2")], 360_000),  # window 0 closes and is archived
    ([(600_010, "3")], 660_000),  # window 300,000 closes
    ([(20, "4")], 700_000),  # late for archived window 0: a correction
    ([(900_010, "5")], SPEC.expire_at(0)),  # window 0 expires from the archive
    ([(30, "6"), (1_200_010, "7")], SPEC.expire_at(0) + 10),  # too late for window 0: refused
    ([(1_500_010, "8")], SPEC.expire_at(300_000) + 1),
]


def run(crash_at: int | None) -> tuple[dict[str, Any], list[Any]]:
    """Every batch; with ``crash_at``, the worker dies after that batch's archive write and before
    its value and watermark writes, and the batch is delivered again."""
    from finops_app.agents.units import archive_key

    table: dict[str, Any] = {}
    emitted: list[Any] = []
    for i, (batch, wm_new) in enumerate(BATCHES):
        before = {k: orjson.loads(orjson.dumps(v)) for k, v in table.items()}
        emitted += agent_step(table, batch, wm_new)
        if i == crash_at:
            torn = before
            if archive_key("u") in table:
                torn[archive_key("u")] = table[archive_key("u")]  # only the first write got through
            table = torn
            emitted += agent_step(table, batch, wm_new)
    return table, emitted


def test_a_crash_between_the_archive_and_the_value_write_replays_exactly() -> None:
    """The archive is written first and can be one batch ahead of the unit's value: it goes back to
    what it replaced, so replaying the batch repeats records already sent (the same revision and
    totals), never a different one, and ends in the state of a run without the crash."""
    clean_table, clean = run(None)
    assert [e[:3] for e in clean] == [
        (0, 1, Decimal("1")),
        (300_000, 1, Decimal("2")),
        (0, 2, Decimal("5")),  # the correction of window 0
        (600_000, 1, Decimal("3")),
        (900_000, 1, Decimal("5")),
        (1_200_000, 1, Decimal("7")),  # the event at 30 ms came too late for window 0: refused
        (1_500_000, 1, Decimal("8")),
    ]
    for crash_at in range(len(BATCHES)):
        table, emitted = run(crash_at)
        assert table == clean_table, crash_at
        assert set(emitted) == set(clean), crash_at  # repeats, nothing new


def test_the_table_inspector_shows_a_units_archive_key_with_its_windows(tmp_path: Path) -> None:
    """Read from RocksDB files laid out as Faust writes them (JSON-encoded keys and values)."""
    from rocksdict import Options, Rdict

    from finops_app import inspect_tables
    from finops_app.agents.units import archive_key, load_unit, store_unit

    table: dict[str, Any] = {}
    state = load_unit(table, "ecommerce")
    feed(state, 10, "1", 0)
    feed(state, 300_010, "2", 0)
    settle(SPEC, state, "w", 360_000)  # window 0 archived, 300,000 open
    store_unit(table, "ecommerce", state)
    table["\x00partition/3"] = {"wm": 360_000, "due": {}}
    assert "wa" not in table["ecommerce"] and "wa" in table[archive_key("ecommerce")]
    path = tmp_path / "v1" / "tables"
    path.mkdir(parents=True)
    db = Rdict(str(path / "unit_state-3.db"), options=Options(raw_mode=True))
    for key, value in table.items():
        db[orjson.dumps(key)] = orjson.dumps(value)
    db.close()
    rows = inspect_tables.rows(tmp_path, "unit_state")
    assert [(r["partition"], r["business_unit"], r["cost"], r["pending"]) for r in rows if "cost" in r] == [
        (3, "ecommerce", "1", False),  # from the archive key
        (3, "ecommerce", "2", True),
    ]
    assert [r["key"] for r in rows if "key" in r] == ["\\0partition/3"]


def test_a_batch_that_emits_and_reopens_nothing_neither_reads_nor_writes_the_archive() -> None:
    from finops_app.agents.units import archive_key

    class Table(dict[str, Any]):
        def __init__(self) -> None:
            super().__init__()
            self.reads: list[str] = []
            self.writes: list[str] = []

        def get(self, key: str, default: Any = None) -> Any:
            self.reads.append(key)
            return super().get(key, default)

        def __setitem__(self, key: str, value: Any) -> None:
            self.writes.append(key)
            super().__setitem__(key, value)

    table = Table()
    agent_step(table, [(10, "1"), (300_010, "2")], 360_000)  # window 0 archived
    assert table.writes == [archive_key("u"), "u", "wm"]
    table.reads.clear()
    table.writes.clear()
    agent_step(table, [(300_020, "3")], 370_000)  # into the open window: nothing closes
    assert archive_key("u") not in table.reads and table.writes == ["u", "wm"]
    agent_step(table, [(20, "4")], 380_000)  # late for window 0: its archive is read and rewritten
    assert archive_key("u") in table.reads and table.writes[-3:] == [archive_key("u"), "u", "wm"]


def test_a_first_archive_of_one_window_kind_keeps_the_other_kinds_archive() -> None:
    """A unit with archived cost windows (``wa``) and none of ROI (no ``rx``) whose ROI window closes
    in a batch where no cost window does: the new ROI archive must be written beside the cost
    archive, not over it, or a late event for an archived cost window finds nothing to reopen and
    its correction carries only the late amount."""
    from finops_app.agents.units import load_unit, read_unit, store_unit

    roi_spec = WindowSpec(size_ms=600_000, lateness_ms=60_000, retention_ms=3_600_000)
    table: dict[str, Any] = {}
    state = load_unit(table, "u")
    state["r"] = {}
    feed(state, 10, "1", 0)  # cost window 0 and ROI window 0
    add(state["r"], "0", cost=Decimal("1"))
    assert [c.cost for c in settle(SPEC, state, "w", 360_000)] == [Decimal("1")]  # cost window 0 archived
    assert settle(roi_spec, state, "r", 360_000) == []
    store_unit(table, "u", state)

    state = load_unit(table, "u")  # nothing between 5 and 10 minutes: only the ROI window closes
    assert settle(SPEC, state, "w", 660_000) == []
    assert [c.cost for c in settle(roi_spec, state, "r", 660_000)] == [Decimal("1")]
    store_unit(table, "u", state)
    assert set(all_windows(read_unit(table, "u") or {}, "w")) == {"0"}

    state = load_unit(table, "u")  # a late cost event for the archived window 0
    reopen(SPEC, state, "w", ["0"])
    add(state["w"], "0", cost=Decimal("2"))
    (correction,) = settle(SPEC, state, "w", 670_000)
    assert (correction.cost, correction.revision) == (Decimal("3"), 2)


two_kinds = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=60),  # event time, in 1-minute steps
        st.integers(min_value=1, max_value=500),  # cents
        st.booleans(),  # cost (cost and ROI windows) or revenue (ROI windows only)
        st.integers(min_value=0, max_value=4),  # how far the watermark moves after it, in minutes
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(two_kinds)
def test_stored_cost_and_roi_archives_emit_what_the_open_layout_emits(
    seq: list[tuple[int, int, bool, int]],
) -> None:
    """The unit agent's round trip (load, reopen, add, settle both kinds, store) once per event, with
    both archives under one table key, emits exactly what two plain dicts of open windows emit."""
    from finops_app.agents.units import load_unit, store_unit

    specs = {
        "w": WindowSpec(size_ms=300_000, lateness_ms=0, retention_ms=900_000),
        "r": WindowSpec(size_ms=600_000, lateness_ms=0, retention_ms=900_000),
    }
    plain: dict[str, dict[str, Any]] = {"w": {}, "r": {}}
    table: dict[str, Any] = {}
    wm = 0
    for minute, cents, is_cost, step in seq:
        ts, amount = minute * 60_000, Decimal(cents) / 100
        state = load_unit(table, "u")
        state.setdefault("w", {})
        state.setdefault("r", {})
        fields = ("w", "r") if is_cost else ("r",)
        keys = {f: accept(specs[f], plain[f], ts, wm) for f in fields}
        if all(k is not None for k in keys.values()):
            for f, key in keys.items():
                assert key is not None
                kwargs = {"cost": amount} if is_cost else {"revenue": amount}
                add(plain[f], key, **kwargs)
                reopen(specs[f], state, f, [key])
                add(state[f], key, **kwargs)
        wm += step * 60_000
        for f, spec in specs.items():
            assert close(spec, plain[f], wm) == settle(spec, state, f, wm), f
        store_unit(table, "u", state)
    for f in specs:
        assert all_windows(read_back(table), f) == plain[f], f


def read_back(table: dict[str, Any]) -> dict[str, Any]:
    from finops_app.agents.units import read_unit

    return read_unit(table, "u") or {"w": {}, "r": {}}
