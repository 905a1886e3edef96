"""Event-time tumbling windows with our own close logic: state dicts in, closed windows out.

Faust's ``on_window_close`` cannot carry exact per-window results (see the notes), so windows are
plain JSON dicts inside a table value, keyed by window start (epoch ms, as a string):

``{"c": "12.5", "nc": 3, "v": "40", "nv": 2, "rev": 1, "dirty": false}``

``c``/``nc`` are cost and its event count, ``v``/``nv`` revenue and its count, ``rev`` the number
of times the window was emitted and ``dirty`` whether it changed since. A window closes (is
emitted) once the partition's watermark passes ``end + lateness``; a late event re-opens it as
dirty and the next close emits a correction with ``rev + 1``. Windows are dropped ``retention``
after their end; an event older than that is refused (the caller dead-letters it).

The functions mutate the dict they are given (callers pass a copy loaded from the table) and
never touch I/O, so exactness is tested here without Kafka.

**Open and archived windows.** A window emitted and unchanged since is only kept to absorb a late
event until it expires (a day by default: 288 five-minute windows per unit). Kept among the open
windows, every batch would decode, re-encode and scan all of them. ``settle`` therefore moves them
into an *archive* inside the same state value: one JSON string field (``<field>a``, decoded only
when a window enters or leaves it) plus its earliest expiry (``<field>x``). A late event for an
archived window takes it back first (``reopen``), so its correction has the full totals and the
next revision. A value from before the archive (emitted windows among the open ones) is moved over
by its next ``settle``. The agent stores the archive strings under their own table key, read only
when a window enters or leaves the archive and written only when it changes (agents/units.py
``load_unit``, ``store_unit``); the expiries stay in the unit's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

Windows = dict[str, dict[str, Any]]
ARCHIVE_PREFIX = "\x00archive/"  # table key prefix of a unit's archive (agents/units.py archive_key)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    size_ms: int
    lateness_ms: int
    retention_ms: int

    def start(self, ts_ms: int) -> int:
        """The start of the one window that contains ``ts_ms``."""
        return ts_ms - ts_ms % self.size_ms

    def close_at(self, start: int) -> int:
        """Watermark at which the window starting at ``start`` closes."""
        return start + self.size_ms + self.lateness_ms

    def expire_at(self, start: int) -> int:
        return start + self.size_ms + max(self.retention_ms, self.lateness_ms)


@dataclass(frozen=True, slots=True)
class Closed:
    start_ms: int
    end_ms: int
    cost: Decimal
    cost_events: int
    revenue: Decimal
    revenue_events: int
    revision: int
    late: bool


def accept(spec: WindowSpec, windows: Windows, ts_ms: int, watermark: int) -> str | None:
    """The window key for an event at ``ts_ms``, or None when it is past retention."""
    start = spec.start(ts_ms)
    if spec.expire_at(start) <= watermark:
        return None
    return str(start)


def add(
    windows: Windows,
    key: str,
    cost: Decimal | None = None,
    revenue: Decimal | None = None,
    cost_events: int = 1,
    revenue_events: int = 1,
) -> None:
    """Add cost or revenue to window ``key`` (creating it): one event's, or the sum of several."""
    w = windows.get(key)
    if w is None:
        w = windows[key] = {"c": "0", "nc": 0, "v": "0", "nv": 0, "rev": 0, "dirty": True}
    if cost is not None:
        w["c"] = str(Decimal(w["c"]) + cost)
        w["nc"] += cost_events
    if revenue is not None:
        w["v"] = str(Decimal(w["v"]) + revenue)
        w["nv"] += revenue_events
    w["dirty"] = True


def close(spec: WindowSpec, windows: Windows, watermark: int) -> list[Closed]:
    """Emit every dirty window whose close time the watermark has passed, then drop expired ones."""
    out = []
    for key in sorted(windows, key=int):
        w = windows[key]
        start = int(key)
        if w["dirty"] and spec.close_at(start) <= watermark:
            w["rev"] += 1
            w["dirty"] = False
            out.append(
                Closed(
                    start_ms=start,
                    end_ms=start + spec.size_ms,
                    cost=Decimal(w["c"]),
                    cost_events=w["nc"],
                    revenue=Decimal(w["v"]),
                    revenue_events=w["nv"],
                    revision=w["rev"],
                    late=w["rev"] > 1,
                )
            )
        if spec.expire_at(start) <= watermark:
            del windows[key]  # emitted above if it still had unreported changes
    return out


def next_due(spec: WindowSpec, windows: Windows) -> int | None:
    """The earliest watermark at which ``close`` has work for these windows (None: never)."""
    due = None
    for key, w in windows.items():
        start = int(key)
        at = spec.close_at(start) if w["dirty"] else spec.expire_at(start)
        due = at if due is None else min(due, at)
    return due


def roi(cost: Decimal, revenue: Decimal) -> float | None:
    """(revenue - cost) / cost as a ratio; None when cost is zero (undefined, not infinite)."""
    if cost == 0:
        return None
    return float((revenue - cost) / cost)


class LazyArchive(dict[str, Any]):
    """A state whose archive strings are read on first use: ``fetch_archive()`` puts them in.

    The agent keeps each archive under its own table key; a batch that neither emits nor takes back
    a window never reads it. ``<field>x`` (in the state itself) says whether there is one.
    """

    fetch_archive: Callable[[], None] | None = None


def archive_of(state: dict[str, Any], field: str) -> Windows:
    """The archived windows of ``state[field]`` (decoded; empty when there are none)."""
    raw = state.get(field + "a")
    if raw is None and field + "x" in state:
        fetch = getattr(state, "fetch_archive", None)
        if fetch is not None:
            fetch()
            raw = state.get(field + "a")
    return orjson.loads(raw) if raw else {}


def all_windows(state: dict[str, Any], field: str) -> Windows:
    """Open and archived windows of ``state[field]`` together (for views and tests)."""
    return {**archive_of(state, field), **state[field]}


def _store_archive(spec: WindowSpec, state: dict[str, Any], field: str, archive: Windows) -> None:
    if archive:
        state[field + "a"] = orjson.dumps(archive).decode()
        state[field + "x"] = min(spec.expire_at(int(k)) for k in archive)
    else:
        state.pop(field + "a", None)
        state.pop(field + "x", None)


def reopen(spec: WindowSpec, state: dict[str, Any], field: str, keys: list[str]) -> None:
    """Move the archived windows among ``keys`` back to the open ones (late events for them)."""
    if field + "x" not in state:  # no archive (its expiry is kept whenever there is one)
        return
    open_windows = state[field]
    missing = [k for k in keys if k not in open_windows]
    if not missing:
        return
    archive = archive_of(state, field)
    moved = [k for k in missing if k in archive]
    if moved:
        for k in moved:
            open_windows[k] = archive.pop(k)
        _store_archive(spec, state, field, archive)


def settle(spec: WindowSpec, state: dict[str, Any], field: str, watermark: int) -> list[Closed]:
    """``close`` the open windows of ``state[field]``; archive the emitted ones, expire archived ones."""
    windows = state[field]
    out = close(spec, windows, watermark)
    emitted = [k for k, w in windows.items() if not w["dirty"] and w["rev"] > 0]
    expiry = state.get(field + "x")
    if emitted or (expiry is not None and expiry <= watermark):
        archive = archive_of(state, field)
        for k in emitted:
            archive[k] = windows.pop(k)
        for k in [k for k in archive if spec.expire_at(int(k)) <= watermark]:
            del archive[k]
        _store_archive(spec, state, field, archive)
    return out


def settle_due(spec: WindowSpec, state: dict[str, Any], field: str) -> int | None:
    """The earliest watermark at which ``settle`` has work: an open window's, or the archive's expiry."""
    due = next_due(spec, state[field])
    expiry: int | None = state.get(field + "x")
    if expiry is None:
        return due
    return expiry if due is None else min(due, expiry)
