"""Result records in (decoded JSON of the result topics), bounded in-memory views of them out.

``ResultStore.apply(topic, record, timestamp_ms)`` takes one record of a result topic (the topic's
name without the prefix) and keeps:

- window totals: the latest revision per (business unit, window start) for ``horizon_ms`` of event
  time behind the newest window end seen; older windows are folded into per-(unit, UTC day) sums,
  which is exact because the windowing agent corrects a window only within its retention;
- ROI results per unit and window (latest revision), over the same horizon;
- anomalies by anomaly_id (latest revision; peak cost and the drivers at the peak), with the
  detection latency of their ``open`` record;
- recommendations by id, budget alerts by id, the latest actions, dead-letter counts and the
  latest dead letters (their raw bytes are not kept).

Pure: no Kafka, no Faust, no clock; ``finops_app.web.queries`` turns it into JSON answers.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from finops_app import topics

logger = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def ms(text: str) -> int:
    """ISO-8601 (``2025-01-15T09:30:00.000Z``, or naive, taken as UTC) -> epoch milliseconds."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def day_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


@dataclass(slots=True)
class Window:
    total: Decimal
    count: int
    end_ms: int
    revision: int
    late: bool
    currency: str


class ResultStore:
    """Latest state of every result, bounded by event-time horizon and record counts."""

    def __init__(
        self,
        horizon_ms: int = 48 * HOUR_MS,
        max_items: int = 5000,
        max_recent: int = 200,
    ) -> None:
        self.horizon_ms = horizon_ms
        self.max_items = max_items
        self.windows: dict[str, dict[int, Window]] = {}
        self.settled_daily: dict[tuple[str, str], Decimal] = {}
        self.roi: dict[str, dict[int, dict[str, Any]]] = {}
        self.anomalies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.open_latency_ms: dict[str, int] = {}
        self.recommendations: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.budget_alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.actions: deque[dict[str, Any]] = deque(maxlen=max_recent)
        self.deadletters: deque[dict[str, Any]] = deque(maxlen=max_recent)
        self.deadletters_seen = 0
        self.deadletters_by_source: Counter[str] = Counter()
        self.deadletters_by_stage: Counter[str] = Counter()
        self.newest_window_end_ms = 0
        self.newest_end_by_unit: dict[str, int] = {}
        self.newest_roi_emitted_ms = 0
        self.newest_roi_window_end_ms = 0
        self.records = 0
        self._apply = {
            topics.AGGREGATIONS: self._window,
            topics.ROI: self._roi,
            topics.ANOMALIES: self._anomaly,
            topics.RECOMMENDATIONS: self._recommendation,
            topics.BUDGET_ALERTS: self._budget_alert,
            topics.ACTIONS: self._action,
            topics.DEADLETTER: self._deadletter,
        }

    def apply(self, topic: str, record: dict[str, Any], timestamp_ms: int = 0) -> None:
        """Fold one record of result topic ``topic`` in; raises KeyError/ValueError on a bad one."""
        handler = self._apply.get(topic)
        if handler is None:
            raise ValueError(f"not a result topic: {topic}")
        handler(record)
        self.records += 1

    # -- window totals and ROI ---------------------------------------------------------------
    # Horizons are per unit: a unit's records come from one partition, in order, so a look-back
    # that reads one partition ahead of another never pushes the other's windows out unseen.
    def _window(self, rec: dict[str, Any]) -> None:
        unit, start, end = rec["business_unit"], ms(rec["window_start"]), ms(rec["window_end"])
        new = Window(
            Decimal(rec["total_cost"]),
            int(rec["event_count"]),
            end,
            int(rec.get("revision", 1)),
            bool(rec.get("late", False)),
            str(rec.get("currency", "USD")),
        )
        newest = self.newest_end_by_unit.get(unit, 0)
        if end < newest - self.horizon_ms:  # cannot happen: corrections stay within the retention
            logger.warning("window %s %s arrived behind the horizon; counted", unit, rec["window_start"])
            self._settle(unit, start, new.total)
            return
        per_unit = self.windows.setdefault(unit, {})
        old = per_unit.get(start)
        if old is None or new.revision >= old.revision:
            per_unit[start] = new
        if end > newest:
            self.newest_end_by_unit[unit] = end
            self.newest_window_end_ms = max(self.newest_window_end_ms, end)
            cutoff = end - self.horizon_ms
            for old_start in [s for s, w in per_unit.items() if w.end_ms < cutoff]:
                self._settle(unit, old_start, per_unit.pop(old_start).total)

    def _settle(self, unit: str, start: int, total: Decimal) -> None:
        key = (unit, day_of(start))
        self.settled_daily[key] = self.settled_daily.get(key, Decimal(0)) + total
        oldest_day = day_of(start - 62 * DAY_MS)  # keep this month and the last
        for stale in [k for k in self.settled_daily if k[0] == unit and k[1] < oldest_day]:
            del self.settled_daily[stale]

    def _roi(self, rec: dict[str, Any]) -> None:
        unit, start, end = rec["business_unit"], ms(rec["window_start"]), ms(rec["window_end"])
        revision = int(rec.get("revision", 1))  # a bad one fails here, before the record is kept
        per_unit = self.roi.setdefault(unit, {})
        old = per_unit.get(start)
        if old is None or revision >= int(old.get("revision", 1)):
            per_unit[start] = rec
        self.newest_roi_window_end_ms = max(self.newest_roi_window_end_ms, end)
        if rec.get("timestamp"):
            self.newest_roi_emitted_ms = max(self.newest_roi_emitted_ms, ms(rec["timestamp"]))
        cutoff = ms(per_unit[max(per_unit)]["window_end"]) - self.horizon_ms
        for old_start in [s for s in per_unit if s < cutoff]:
            del per_unit[old_start]

    def daily(self) -> dict[tuple[str, str], Decimal]:
        """Cost per (unit, UTC day): folded days plus the windows still held."""
        out = dict(self.settled_daily)
        for unit, per_unit in self.windows.items():
            for start, w in per_unit.items():
                key = (unit, day_of(start))
                out[key] = out.get(key, Decimal(0)) + w.total
        return out

    # -- anomalies, recommendations, budgets, actions, dead letters ------------------------
    def _anomaly(self, rec: dict[str, Any]) -> None:
        aid = rec["anomaly_id"]
        revision = int(rec.get("revision", 1))  # a bad one fails here, before the record is kept
        old = self.anomalies.get(aid)
        if rec["status"] == "open" and rec.get("detection_latency_ms"):
            self.open_latency_ms[aid] = int(rec["detection_latency_ms"])
        if old is not None and revision < int(old.get("revision", 1)):
            return
        peaks = [Decimal(rec["current_cost"])] if rec["status"] != "closed" else []
        if old is not None:
            peaks.append(Decimal(old["peak_cost"]))
        merged = dict(rec)
        merged["peak_cost"] = str(max(peaks)) if peaks else rec["current_cost"]
        if old is not None and Decimal(merged["peak_cost"]) > Decimal(rec["current_cost"]):
            merged["drivers"] = old["drivers"]  # what drove the peak, not the calm that closed it
        self.anomalies[aid] = merged
        self.anomalies.move_to_end(aid)
        while len(self.anomalies) > self.max_items:
            victim = next((k for k, v in self.anomalies.items() if v["status"] == "closed"), None)
            victim = victim or next(iter(self.anomalies))
            del self.anomalies[victim]
            self.open_latency_ms.pop(victim, None)

    def _recommendation(self, rec: dict[str, Any]) -> None:
        _bounded_put(self.recommendations, rec["recommendation_id"], rec, self.max_items)

    def _budget_alert(self, rec: dict[str, Any]) -> None:
        _bounded_put(self.budget_alerts, rec["alert_id"], rec, self.max_items)

    def _action(self, rec: dict[str, Any]) -> None:
        self.actions.append(rec)

    def _deadletter(self, rec: dict[str, Any]) -> None:
        self.deadletters_seen += 1
        self.deadletters_by_source[str(rec.get("source_topic", "?"))] += 1
        self.deadletters_by_stage[str(rec.get("stage", "?"))] += 1
        self.deadletters.append({k: v for k, v in rec.items() if k != "raw"})


def _bounded_put(d: OrderedDict[str, dict[str, Any]], key: str, rec: dict[str, Any], limit: int) -> None:
    d[key] = rec
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)
