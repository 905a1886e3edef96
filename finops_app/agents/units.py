"""Per business unit: 5-minute cost totals and the cost/revenue ROI join, closed by watermark.

Consumes finops.stream.by-unit (batches of cost and business events re-keyed by unit, plus ticks);
produces one WindowTotal per unit and window on finops.cost.aggregations and one RoiResult per
unit and ROI window on finops.roi.calculations, each when the partition's watermark passes the
window's end plus the allowed lateness; a late event re-emits the window with ``revision + 1``.

Exactness: a unit's value stores the highest source offset applied per source partition, so an
event delivered twice (a redelivery after a crash, or a re-sent intake record) is counted once.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import orjson

from finops_app.agents.common import SourceClock, dead_letter, delivered, fresh_items, groups, run_batches
from finops_app.agents.ticks import Clock
from finops_app.context import Context
from finops_app.core import budget as budget_core
from finops_app.core.money import q4s
from finops_app.core.validate import iso
from finops_app.core.windows import (
    ARCHIVE_PREFIX,
    Closed,
    LazyArchive,
    WindowSpec,
    add,
    reopen,
    roi,
    settle,
    settle_due,
)
from finops_app.tables.state import decode_key, partition_key

logger = logging.getLogger(__name__)
_ZERO = Decimal(0)


def new_unit() -> dict[str, Any]:
    return {"w": {}, "r": {}, "h": {}, "cur": None, "m": {}, "ma": {}}


ARCHIVE_FIELDS = ("wa", "ra")  # emitted windows (core.windows.settle); their expiries stay in the value


def archive_key(unit: str) -> str:
    """Table key of a unit's window archive, stored apart from its open windows and offsets."""
    return f"{ARCHIVE_PREFIX}{unit}"


class UnitState(LazyArchive):
    """A unit's state as loaded by ``load_unit``: ``loaded`` is its archive as read (None: not read)."""

    loaded: dict[str, Any] | None = None
    legacy = False  # the archive was inside the value (stored before the split): move it out


def load_unit(table: Any, unit: str) -> UnitState:
    """A unit's state from its table value; its archive is read from its own key on first use.

    Each archive write carries a sequence number and the archive it replaced (``undo``), and the
    value written after it carries the same number. An archive ahead of its value means the worker
    died between the two writes (store_unit); the batch is then delivered again, so the archive
    goes back to what it replaced and the replay starts from the state before that batch.
    """
    value = table.get(unit)
    state = UnitState(value if value is not None else new_unit())
    if any(f in state for f in ARCHIVE_FIELDS):  # stored whole, before the split
        state.loaded = {f: state[f] for f in ARCHIVE_FIELDS if f in state}
        state.legacy = True
        return state

    def fetch() -> None:
        stored = table.get(archive_key(unit)) or {}
        if stored.get("aseq", 0) > state.get("aseq", 0):
            stored = stored["undo"]
        state.loaded = {f: stored[f] for f in ARCHIVE_FIELDS if f in stored}
        state.update(state.loaded)
        state.fetch_archive = None

    state.fetch_archive = fetch
    return state


def read_unit(table: Any, unit: str) -> dict[str, Any] | None:
    """A unit's whole state, archive included (views, tests); None when the unit is unknown."""
    if table.get(unit) is None:
        return None
    state = load_unit(table, unit)
    if state.fetch_archive is not None:
        state.fetch_archive()
    return dict(state)


def store_unit(table: Any, unit: str, state: UnitState) -> None:
    """Write the unit's value, and first its archive if it was read and changed.

    The archive holds up to a day of emitted windows: written with the value, every batch wrote the
    whole day to the changelog. Now it goes to its own key when a window enters or leaves it.
    """
    # a first archive of one kind (settle does not read the key when its own kind had none): the
    # stored archive of the other kind shares the key, so read it before writing over it
    if (
        state.fetch_archive is not None
        and any(f in state for f in ARCHIVE_FIELDS)  # a new archive of one kind ...
        and any(f"{f[0]}x" in state and f not in state for f in ARCHIVE_FIELDS)  # ... another's stored
    ):
        state.fetch_archive()
    value = {f: v for f, v in state.items() if f not in ARCHIVE_FIELDS}
    archive = {f: state[f] for f in ARCHIVE_FIELDS if f in state}
    # not read and now present: there was none (archive_of reads it whenever there is one)
    loaded = state.loaded if state.loaded is not None else ({} if archive else None)
    if loaded is not None and (archive != loaded or state.legacy):
        value["aseq"] = state.get("aseq", 0) + 1
        table[archive_key(unit)] = {**archive, "aseq": value["aseq"], "undo": loaded}
    table[unit] = value


def window_total(unit: str, c: Closed, currency: str | None) -> dict[str, Any]:
    return {
        "business_unit": unit,
        "total_cost": q4s(c.cost),
        "event_count": c.cost_events,
        "window_start": iso(c.start_ms),
        "window_end": iso(c.end_ms),
        "revision": c.revision,
        "currency": currency or "USD",
        "closed_at": iso(int(time.time() * 1000)),
        "late": c.late,
    }


def roi_result(unit: str, c: Closed) -> dict[str, Any]:
    return {
        "business_unit": unit,
        "cost": q4s(c.cost),
        "revenue": q4s(c.revenue),
        "roi": roi(c.cost, c.revenue),
        "cost_events": c.cost_events,
        "revenue_events": c.revenue_events,
        "unit_cost": q4s(c.cost / c.revenue_events) if c.revenue_events else None,
        "window_start": iso(c.start_ms),
        "window_end": iso(c.end_ms),
        "timestamp": iso(int(time.time() * 1000)),
        "revision": c.revision,
    }


def register(ctx: Context, clock: Clock) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.unit_state
    lateness = settings.allowed_lateness_seconds * 1000
    retention = settings.window_retention_seconds * 1000
    totals = WindowSpec(settings.window_seconds * 1000, lateness, retention)
    rois = WindowSpec(settings.roi_window_seconds * 1000, lateness, retention)
    w_size, r_size = totals.size_ms, rois.size_ms
    budgets = settings.budgets
    sources = SourceClock(settings.idle_timeout_seconds)
    app.on_partitions_revoked.connect(sources.forget)
    app.on_partitions_assigned.connect(sources.forget)

    async def apply(
        partition: int,
        prec: dict[str, Any],
        event: Any,
        st: dict[str, Any],
        kind: str,
        src_id: str,
        items: list[Any],
        wm: int,
        latest_produce: int,
        outputs: list[Any],
    ) -> int:
        """Add one group's new events to the unit's windows; returns the latest produce time seen
        (dead letters' delivery futures go to ``outputs``)."""
        wsum: dict[int, list[Any]] = {}  # window start -> [cost, events]: one update per window
        rsum: dict[int, list[Any]] = {}  # ROI window start -> [cost, events, revenue, events]
        msum: dict[str, Decimal] = {}  # month -> cost
        max_ts = 0
        for offset, produced, body in items:
            ts = body["ts_ms"]
            if st["cur"] is None:
                st["cur"] = body["currency"]
            elif body["currency"] != st["cur"]:
                outputs.append(
                    await dead_letter(
                        ctx,
                        event,
                        f"currency {body['currency']} differs from {st['cur']} "
                        "already used by this business unit; convert before sending",
                        "window",
                        raw=orjson.dumps([offset, produced, body]),
                    )
                )
                continue
            wstart, rstart = ts - ts % w_size, ts - ts % r_size
            if totals.expire_at(wstart) <= wm or rois.expire_at(rstart) <= wm:
                # older than the retained windows: the live view cannot correct them any more;
                # the event still reaches Snowflake (the sink reads this topic), where history is kept
                metrics.inc("late_beyond_retention_total", labels={"agent": "unit_windows"})
                continue
            r = rsum.get(rstart)
            if r is None:
                r = rsum[rstart] = [_ZERO, 0, _ZERO, 0]
            if kind == "cost":
                amount = Decimal(body["cost_amount"])
                w = wsum.get(wstart)
                if w is None:
                    wsum[wstart] = [amount, 1]
                else:
                    w[0] += amount
                    w[1] += 1
                r[0] += amount
                r[1] += 1
                month = _month(ts)
                msum[month] = msum.get(month, _ZERO) + amount
            else:
                r[2] += Decimal(body["revenue_impact"])
                r[3] += 1
            max_ts = max(max_ts, ts)
            latest_produce = max(latest_produce, produced)
        if max_ts:
            sources.observe_source(prec, partition, src_id, max_ts)
        reopen(totals, st, "w", [str(k) for k in wsum])  # late events for emitted windows
        reopen(rois, st, "r", [str(k) for k in rsum])
        for wstart, (cost, n) in wsum.items():
            add(st["w"], str(wstart), cost=cost, cost_events=n)
        for rstart, (cost, n, revenue, nr) in rsum.items():
            add(
                st["r"],
                str(rstart),
                cost=cost if n else None,
                revenue=revenue if nr else None,
                cost_events=n,
                revenue_events=nr,
            )
        for month, cost in msum.items():
            _add_month(st, month, cost)
        return latest_produce

    async def process(partition: int, events: list[Any]) -> None:
        pkey = partition_key(partition)
        prec = table.get(pkey) or {"wm": 0, "due": {}}
        wm_before = wm = prec["wm"]
        states: dict[str, UnitState] = {}

        def state_of(unit: str) -> UnitState:
            st = states.get(unit)
            if st is None:
                st = states[unit] = load_unit(table, unit)
            return st

        latest_produce = 0
        applied = 0  # events counted (not skipped as already applied)
        outputs: list[Any] = []  # delivery futures of this batch's outputs
        for event in events:
            env = orjson.loads(event.value)
            if env["k"] == "tick":
                wm = max(wm, env["wm"])
                continue
            key = None if "g" in env else decode_key(event.message.key)
            for kind, src, spart, unit, group in groups(env, key):
                st = state_of(unit)
                src_id = f"{src}{spart}"
                items, repeats = fresh_items(st, src_id, group)
                if repeats:
                    metrics.inc("duplicates_skipped_total", repeats, labels={"agent": "unit_windows"})
                    # applied before (a retried batch, or a replay): their event times still move the
                    # source, or the watermark falls behind the first attempt's and windows the
                    # first attempt closed are emitted again under the same revision, changed
                    sources.observe_source(prec, partition, src_id, max(i[2]["ts_ms"] for i in group))
                if not items:
                    continue
                applied += len(items)
                latest_produce = await apply(
                    partition, prec, event, st, kind, src_id, items, wm, latest_produce, outputs
                )
        if applied:
            metrics.inc("events_applied_total", applied, labels={"agent": "unit_windows"})
        wm = sources.watermark(prec, partition, wm)
        due_units = [u for u, at in prec["due"].items() if at <= wm]
        for unit in set(states) | set(due_units):
            st = state_of(unit)
            for c in settle(totals, st, "w", wm):
                value = orjson.dumps(window_total(unit, c, st["cur"]))
                outputs.append(await ctx.send(topics.aggregations, unit, value))
                metrics.inc("events_out_total", labels={"topic": topics.aggregations.get_topic_name()})
            for c in settle(rois, st, "r", wm):
                outputs.append(await ctx.send(topics.roi, unit, orjson.dumps(roi_result(unit, c))))
                metrics.inc("events_out_total", labels={"topic": topics.roi.get_topic_name()})
            await _budget_alerts(unit, st, wm, outputs)
            due = [d for d in (settle_due(totals, st, "w"), settle_due(rois, st, "r")) if d is not None]
            if due:
                prec["due"][unit] = min(due)
            else:
                prec["due"].pop(unit, None)
        # the outputs first: the state written next says they were sent (common.delivered)
        await delivered(outputs)
        for unit, st in states.items():
            store_unit(table, unit, st)
        if wm != wm_before or states or events:
            prec["wm"] = wm
            table[pkey] = prec
        latest = max((prec.get("src") or {}).values(), default=wm) if states else None
        clock.observe(topics.by_unit.get_topic_name(), partition, wm, latest)
        if latest_produce:
            metrics.observe(
                "pipeline_latency_ms", time.time() * 1000 - latest_produce, labels={"agent": "unit_windows"}
            )

    months: dict[int, str] = {}  # UTC day -> "YYYY-MM"

    def _month(ts: int) -> str:
        day = ts // 86_400_000
        month = months.get(day)
        if month is None:
            if len(months) > 1000:
                months.clear()
            month = months[day] = budget_core.month_bounds(ts)[2]
        return month

    def _add_month(st: dict[str, Any], month: str, amount: Decimal) -> None:
        st["m"][month] = str(Decimal(st["m"].get(month, "0")) + amount)
        for old in sorted(st["m"])[:-2]:  # keep this month and the previous one
            st["m"].pop(old, None)
            st["ma"].pop(old, None)

    async def _budget_alerts(unit: str, st: dict[str, Any], wm: int, outputs: list[Any]) -> None:
        """Send the budget alerts now due, for each month the unit's spend is kept for (this one and
        the one before: a batch or a late event can add to a month the watermark has left); their
        delivery futures go to ``outputs``."""
        amount = budgets.get(unit)
        if amount is None or not st["m"] or wm <= 0:
            return
        for month in sorted(st["m"]):
            start, end, _ = budget_core.month_bounds(budget_core.month_start_ms(month))
            spent = Decimal(st["m"][month])
            forecast = budget_core.forecast_month_end(spent, wm, start, end) if wm >= start else None
            sent = st["ma"].setdefault(month, [])
            for kind, threshold in budget_core.due_alerts(amount, spent, forecast, sent):
                alert = budget_core.alert_record(
                    unit, month, kind, threshold, budget=amount, spent=spent, forecast=forecast, now_ms=wm
                )
                sent.append(budget_core.alert_key(kind, threshold))
                outputs.append(await ctx.send(topics.budget_alerts, unit, orjson.dumps(alert)))
                metrics.inc("events_out_total", labels={"topic": topics.budget_alerts.get_topic_name()})

    @app.agent(topics.by_unit, name="unit_windows")
    async def unit_windows(stream: Any) -> None:
        """Window totals, ROI and budgets per business unit."""
        await run_batches(stream, ctx, "unit_windows", process)
