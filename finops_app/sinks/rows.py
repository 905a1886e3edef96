"""Kafka messages in, (target table, row dict) pairs out: which sink topic feeds which table, and how.

Pure functions, no I/O. The table definitions here (:data:`TABLES`) mirror ``sql/00*.sql``; an
integration test compares them with the migrated schema, so the two cannot drift apart.

- ``finops.stream.by-unit``: internal envelopes ``{"k", "p", "o", "e"}`` or batch envelopes
  ``{"k", "p", "b": [[o, t, e], ...]}`` (a row per event); ``cost`` ->
  finops_curated.cost_events, ``biz`` -> finops_curated.business_events, ``tick`` -> nothing.
- ``finops.stream.by-resource``: ``res`` -> finops_curated.resource_events.
- raw inputs (cost, business, resource events) -> finops_staging.*_raw, the message as VARIANT;
  a message that is not JSON is skipped (intake already dead-lettered it).
- result topics -> their finops_aggregated table and their finops_staging.*_raw table.
"""

from __future__ import annotations

from typing import Any

import orjson

from finops_app import topics as t
from finops_app.core import ledger
from finops_app.errors import ValidationError
from finops_app.sinks.loader import Column, TableSpec

Row = dict[str, Any]
Mapped = list[tuple[str, Row]]


def _c(name: str, type_: str = "STRING", precision: int = 38, scale: int = 0, *, null: bool = True) -> Column:
    return Column(name, type_, precision, scale, null)


def _num(name: str, precision: int, scale: int = 0, *, null: bool = True) -> Column:
    return Column(name, "NUMBER", precision, scale, null)


_TS = "TIMESTAMP_NTZ"
_POSITION = (_num("source_partition", 10), _num("source_offset", 20))
_STAGING_COLUMNS = (
    _c("record_content", "VARIANT"),
    _c("record_metadata", "VARIANT"),
    _c("source_topic", null=False),
    _num("source_partition", 10, null=False),
    _num("source_offset", 20, null=False),
)
_STAGING_KEY = ("source_topic", "source_partition", "source_offset")

RAW_TABLES = {
    t.COST_EVENTS: "cost_events_raw",
    t.BUSINESS_EVENTS: "business_events_raw",
    t.RESOURCE_EVENTS: "resource_events_raw",
    t.ANOMALIES: "cost_anomalies_raw",
    t.AGGREGATIONS: "cost_aggregations_raw",
    t.ROI: "roi_calculations_raw",
    t.RECOMMENDATIONS: "recommendations_raw",
    t.BUDGET_ALERTS: "budget_alerts_raw",
    t.ACTIONS: "actions_raw",
    t.DEADLETTER: "deadletter_raw",
}

_SPECS = [
    TableSpec("finops_staging", name, _STAGING_COLUMNS, _STAGING_KEY, insert_only=True)
    for name in RAW_TABLES.values()
] + [
    TableSpec(
        "finops_curated",
        "cost_events",
        (
            _c("event_id", null=False),
            _c("timestamp", _TS, null=False),
            _c("event_type"),
            _c("service", null=False),
            _c("region"),
            _num("cost_amount", 38, 10, null=False),
            _c("currency", null=False),
            _c("resource_id"),
            _c("business_unit", null=False),
            _c("project_id"),
            _c("environment"),
            _c("provider"),
            _c("account_id"),
            _c("charge_category"),
            _c("charge_period_start", _TS),
            _c("charge_period_end", _TS),
            _c("source"),
            _num("schema_version", 5),
            _c("metadata", "VARIANT"),
            *_POSITION,
        ),
        ("event_id",),
    ),
    TableSpec(
        "finops_curated",
        "business_events",
        (
            _c("event_id", null=False),
            _c("timestamp", _TS, null=False),
            _c("event_type"),
            _c("user_id"),
            _c("feature"),
            _c("action"),
            _num("revenue_impact", 38, 10, null=False),
            _c("currency", null=False),
            _c("business_unit", null=False),
            _c("source"),
            _num("schema_version", 5),
            _c("metadata", "VARIANT"),
            *_POSITION,
        ),
        ("event_id",),
    ),
    TableSpec(
        "finops_curated",
        "resource_events",
        (
            _c("event_id", null=False),
            _c("timestamp", _TS, null=False),
            _c("resource_id", null=False),
            _c("resource_type"),
            _c("instance_type"),
            _c("metric"),
            _c("utilisation", "FLOAT", null=False),
            _num("hourly_cost", 38, 10),
            _c("service"),
            _c("region"),
            _c("business_unit", null=False),
            _c("project_id"),
            _c("environment"),
            _c("provider"),
            _c("stateless", "BOOLEAN"),
            _c("source"),
            _num("schema_version", 5),
            _c("metadata", "VARIANT"),
            *_POSITION,
        ),
        ("event_id",),
    ),
    TableSpec(
        "finops_aggregated",
        "cost_anomalies",
        (
            _c("anomaly_id", null=False),
            _c("detected_at", _TS),
            _c("anomaly_type"),
            _c("service"),
            _num("cost_amount", 18, 4),
            _num("expected_amount", 18, 4),
            _num("deviation_percent", 18, 4),
            _c("business_impact"),
            _c("resolved", "BOOLEAN"),
            _c("business_unit"),
            _c("region"),
            _c("series"),
            _c("score", "FLOAT"),
            _c("drivers", "VARIANT"),
            _c("window_start", _TS),
            _c("window_end", _TS),
            _c("timestamp", _TS),
            _c("first_seen", _TS),
            _num("detection_latency_ms", 18),
            _c("status"),
            _num("revision", 10, null=False),
            _c("source", null=False),
        ),
        ("anomaly_id",),
        revision="revision",
    ),
    TableSpec(
        "finops_aggregated",
        "window_totals",
        (
            _c("business_unit", null=False),
            _c("window_start", _TS, null=False),
            _c("window_end", _TS, null=False),
            _num("total_cost", 18, 4, null=False),
            _num("event_count", 18, null=False),
            _num("revision", 10, null=False),
            _c("currency"),
            _c("closed_at", _TS),
            _c("late", "BOOLEAN"),
        ),
        ("business_unit", "window_start"),
        revision="revision",
    ),
    TableSpec(
        "finops_aggregated",
        "roi_results",
        (
            _c("business_unit", null=False),
            _c("window_start", _TS, null=False),
            _c("window_end", _TS, null=False),
            _num("cost", 18, 4, null=False),
            _num("revenue", 18, 4, null=False),
            _c("roi", "FLOAT"),
            _num("cost_events", 18),
            _num("revenue_events", 18),
            _num("unit_cost", 18, 4),
            _c("timestamp", _TS),
            _num("revision", 10, null=False),
        ),
        ("business_unit", "window_start"),
        revision="revision",
    ),
    TableSpec(
        "finops_aggregated",
        "recommendations",
        (
            _c("recommendation_id", null=False),
            _c("resource_id"),
            _c("kind"),
            _c("business_unit"),
            _c("service"),
            _c("region"),
            _c("current_config"),
            _c("proposed_config"),
            _num("monthly_saving", 18, 4),
            _c("evidence", "VARIANT"),
            _c("timestamp", _TS),
        ),
        ("recommendation_id",),
    ),
    TableSpec(
        "finops_aggregated",
        "budget_alerts",
        (
            _c("alert_id", null=False),
            _c("business_unit"),
            _c("month"),
            _num("budget", 18, 4),
            _num("spent", 18, 4),
            _num("forecast", 18, 4),
            _num("threshold_percent", 5),
            _c("kind"),
            _c("timestamp", _TS),
        ),
        ("alert_id",),
    ),
    TableSpec(
        "finops_aggregated",
        "actions",
        (
            _c("action_id", null=False),
            _c("resource_id"),
            _c("kind"),
            _c("dry_run", "BOOLEAN"),
            _c("status"),
            _c("reason"),
            _c("recommendation_id"),
            _c("detail", "VARIANT"),
            _c("timestamp", _TS),
        ),
        ("action_id",),
    ),
    TableSpec(
        "finops_aggregated",
        "deadletters",
        (
            _c("source_topic", null=False),
            _num("source_partition", 10, null=False),
            _num("source_offset", 20, null=False),
            _c("error"),
            _c("field"),
            _c("stage"),
            _c("raw"),
            _num("raw_size", 18),
            _c("timestamp", _TS),
        ),
        _STAGING_KEY,
    ),
]

TABLES: dict[str, TableSpec] = {spec.fqn: spec for spec in _SPECS}

COST_EVENTS = "finops_curated.cost_events"
BUSINESS_EVENTS = "finops_curated.business_events"
RESOURCE_EVENTS = "finops_curated.resource_events"

# result topic -> (aggregated table, {table column: record field} where the names differ)
RESULT_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    t.ANOMALIES: (
        "finops_aggregated.cost_anomalies",
        {
            "cost_amount": "current_cost",
            "expected_amount": "historical_average",
            "business_impact": "severity",
        },
    ),
    t.AGGREGATIONS: ("finops_aggregated.window_totals", {}),
    t.ROI: ("finops_aggregated.roi_results", {}),
    t.RECOMMENDATIONS: (
        "finops_aggregated.recommendations",
        {"current_config": "current", "proposed_config": "proposed"},
    ),
    t.BUDGET_ALERTS: ("finops_aggregated.budget_alerts", {}),
    t.ACTIONS: ("finops_aggregated.actions", {}),
    t.DEADLETTER: (
        "finops_aggregated.deadletters",
        {"source_partition": "partition", "source_offset": "offset"},
    ),
}

GROUPED_KIND = "grp"  # a partition envelope (agents/common.py GROUPED)
ENVELOPE_TOPICS: dict[str, dict[str, str | None]] = {
    t.BY_UNIT: {"cost": COST_EVENTS, "biz": BUSINESS_EVENTS, "tick": None},
    t.BY_RESOURCE: {"res": RESOURCE_EVENTS, "tick": None},
}

SINK_TOPICS: tuple[str, ...] = (
    t.COST_EVENTS,
    t.BUSINESS_EVENTS,
    t.RESOURCE_EVENTS,
    t.BY_UNIT,
    t.BY_RESOURCE,
    *t.RESULTS,
)


def map_message(
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    key: bytes | None = None,
    timestamp_ms: int | None = None,
    *,
    topic_name: str | None = None,
) -> Mapped:
    """The (table, row) pairs one message becomes; [] for messages that load nowhere.

    ``topic`` is the logical name (``finops.cost.events``); ``topic_name`` the real one when a
    prefix is configured (recorded in record_metadata). Raises ValidationError for a message on an
    internal or result topic that is not what the app writes there (the sink dead-letters it).
    """
    if value is None:  # a tombstone: nothing to load
        return []
    if topic in ENVELOPE_TOPICS:
        return _envelope(topic, _json_object(value, topic))
    out: Mapped = []
    raw_table = RAW_TABLES.get(topic)
    if topic in RESULT_TABLES:
        record = _json_object(value, topic)
        table, renames = RESULT_TABLES[topic]
        out.append((table, result_row(topic, record, renames)))
    elif raw_table is None:
        raise ValidationError(f"topic {topic!r} is not a sink topic")
    if raw_table is not None:
        try:
            content = orjson.loads(value)
        except orjson.JSONDecodeError:
            return out  # an invalid input message is on the dead-letter topic already
        out.append(
            (
                f"finops_staging.{raw_table}",
                staging_row(topic_name or topic, partition, offset, content, key, timestamp_ms),
            )
        )
    return out


def staging_row(
    topic: str, partition: int, offset: int, content: Any, key: bytes | None, timestamp_ms: int | None
) -> Row:
    """The Kafka connector's shape: the message as VARIANT plus its position."""
    return {
        "record_content": content,
        "record_metadata": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": key.decode("utf-8", "replace") if key is not None else None,
            "CreateTime": timestamp_ms,
        },
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
    }


def result_row(topic: str, record: dict[str, Any], renames: dict[str, str]) -> Row:
    """A result record as a row of its aggregated table (field names mapped to column names)."""
    table = TABLES[RESULT_TABLES[topic][0]]
    row = {c.name: record.get(renames.get(c.name, c.name)) for c in table.columns}
    if topic == t.ANOMALIES:
        row["source"] = record.get("source") or "stream"
        row["resolved"] = record.get("status") == "closed"
        row["revision"] = record.get("revision", 1)
    elif topic == t.ROI:
        row["revision"] = record.get("revision", 1)
    elif topic == t.DEADLETTER:
        row["stage"] = record.get("stage") or "intake"
    return row


def event_row(table: str, event: dict[str, Any], partition: int | None, offset: int | None) -> Row:
    """A canonical validated event (``core.validate``) as a row of its curated table."""
    row = {c.name: event.get(c.name) for c in TABLES[table].columns}
    row["source_partition"] = partition
    row["source_offset"] = offset
    return row


def _envelope(topic: str, env: dict[str, Any]) -> Mapped:
    kinds = ENVELOPE_TOPICS[topic]
    kind = env.get("k")
    if kind == GROUPED_KIND:  # a partition envelope: [[kind, source, source partition, key, items], ...]
        grouped = env.get("g")
        if not isinstance(grouped, list) or not all(isinstance(g, list) and len(g) == 5 for g in grouped):
            raise ValidationError(
                "partition envelope groups must be [kind, source, partition, key, items]", "g"
            )
        out: Mapped = []
        for gkind, source, partition, _, items in grouped:
            out.extend(_envelope(topic, {"k": gkind, "s": source, "p": partition, "b": items}))
        return out
    if kind not in kinds:
        raise ValidationError(f"unknown envelope kind {kind!r} on {topic}", "k")
    table = kinds[kind]
    if table is None:
        return []
    items = env.get("b")
    if items is not None:  # a batch envelope: [[source offset, produce ms, event], ...]
        if not isinstance(items, list) or not all(
            isinstance(i, list) and len(i) == 3 and isinstance(i[2], dict) for i in items
        ):
            raise ValidationError("batch envelope items must be [offset, time, event object]", "b")
        return [(table, event_row(table, item[2], env.get("p"), item[0])) for item in items]
    event = env.get("e")
    if not isinstance(event, dict):
        raise ValidationError("envelope without an event object", "e")
    offset = env.get("o")
    if env.get("s") == "l" and isinstance(offset, int):  # a ledger correction: a slot of its offset
        offset //= ledger.SLOTS  # (agents/ledger.py ledger_offset); lineage names the by-id record
    return [(table, event_row(table, event, env.get("p"), offset))]


def _json_object(value: bytes, topic: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON on {topic}: {exc}") from None
    if not isinstance(obj, dict):
        raise ValidationError(f"expected a JSON object on {topic}, got {type(obj).__name__}")
    return obj
