"""sinks.rows (topic -> table rows), the loader's column checks and SQL, the offset tracker."""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal

import orjson
import pytest

from finops_app import models
from finops_app import topics as t
from finops_app.agents import common
from finops_app.core.validate import Limits, parse_business, parse_cost
from finops_app.errors import ValidationError
from finops_app.sinks import rows as rows_mod
from finops_app.sinks.loader import Column, converter, merge_sql
from finops_app.sinks.rows import RAW_TABLES, RESULT_TABLES, SINK_TOPICS, TABLES, map_message
from finops_app.sinks.service import OffsetTracker

LIMITS = Limits(now=lambda: 1_737_000_000.0)
ARTICLE_COST = {  # what the article's producer writes: naive timestamp, float amount
    "event_id": "cost_ec2_123",
    "timestamp": "2025-01-15 09:30:00",
    "event_type": "cloud_cost_incurred",
    "service": "ec2",
    "region": "us-east-1",
    "cost_amount": 12.3456789,
    "resource_id": "i-abc",
    "business_unit": "engineering",
    "project_id": "p1",
    "environment": "prod",
    "metadata": {"instance_type": "m5.large"},
}


def env(kind: str, event: dict | None, p: int = 2, o: int = 40) -> bytes:
    body: dict = {"k": kind, "p": p, "o": o, "t": 1}
    if event is not None:
        body["e"] = event
    return orjson.dumps(body)


def test_every_sink_topic_is_mapped() -> None:
    assert set(SINK_TOPICS) == {
        t.COST_EVENTS,
        t.BUSINESS_EVENTS,
        t.RESOURCE_EVENTS,
        t.BY_UNIT,
        t.BY_RESOURCE,
        *t.RESULTS,
    }
    assert t.BUSINESS_EVENTS_RAW not in SINK_TOPICS  # personal data never leaves Kafka


def test_cost_envelope_becomes_a_curated_row() -> None:
    event = parse_cost(ARTICLE_COST, LIMITS)
    [(table, row)] = map_message(t.BY_UNIT, 1, 7, env("cost", event))
    assert table == "finops_curated.cost_events"
    assert set(row) == {c.name for c in TABLES[table].columns}
    assert row["event_id"] == "cost_ec2_123"
    assert row["cost_amount"] == "12.3456789"  # exact decimal string, not a float
    assert row["timestamp"] == "2025-01-15T09:30:00.000Z"
    assert row["currency"] == "USD" and row["provider"] == "aws"
    assert row["metadata"] == {"instance_type": "m5.large"}
    assert (row["source_partition"], row["source_offset"]) == (2, 40)  # position on the input topic


def test_batch_envelope_becomes_one_row_per_event_with_its_own_offset() -> None:
    first = parse_cost(ARTICLE_COST, LIMITS)
    second = parse_cost({**ARTICLE_COST, "event_id": "cost_ec2_124", "cost_amount": "1.5"}, LIMITS)
    value = orjson.dumps({"k": "cost", "s": "c", "p": 4, "b": [[10, 1, first], [12, 2, second]]})
    rows = map_message(t.BY_UNIT, 0, 77, value)
    assert [table for table, _ in rows] == ["finops_curated.cost_events"] * 2
    assert [(r["event_id"], r["cost_amount"]) for _, r in rows] == [
        ("cost_ec2_123", "12.3456789"),
        ("cost_ec2_124", "1.5"),
    ]
    assert [(r["source_partition"], r["source_offset"]) for _, r in rows] == [(4, 10), (4, 12)]
    for broken in ([[1, 2]], [[1, 2, "not an object"]], {"a": 1}):
        with pytest.raises(ValidationError, match="batch envelope"):
            map_message(t.BY_UNIT, 0, 78, orjson.dumps({"k": "cost", "p": 4, "b": broken}))


def test_partition_envelope_becomes_one_row_per_event_of_every_group() -> None:
    first = parse_cost(ARTICLE_COST, LIMITS)
    second = parse_cost({**ARTICLE_COST, "event_id": "cost_ec2_124", "business_unit": "ml"}, LIMITS)
    biz = parse_business(
        {"event_id": "b1", "timestamp": "2025-01-15 09:31:00", "revenue_impact": "19.99"}, LIMITS
    )
    value = orjson.dumps(
        {
            "k": "grp",
            "g": [
                ["cost", "c", 4, first["business_unit"], [[10, 1, first]]],
                ["cost", "c", 5, "ml", [[3, 2, second]]],
                ["biz", "b", 0, "ml", [[8, 2, biz]]],
            ],
        }
    )
    rows = map_message(t.BY_UNIT, 1, 77, value)
    assert [(table, r["event_id"], r["source_partition"], r["source_offset"]) for table, r in rows] == [
        ("finops_curated.cost_events", "cost_ec2_123", 4, 10),
        ("finops_curated.cost_events", "cost_ec2_124", 5, 3),
        ("finops_curated.business_events", "b1", 0, 8),
    ]
    for broken in ({"a": 1}, [["cost", "c", 4]], [["nope", "c", 4, "k", []]]):
        with pytest.raises(ValidationError):
            map_message(t.BY_UNIT, 0, 78, orjson.dumps({"k": "grp", "g": broken}))
    assert rows_mod.GROUPED_KIND == common.GROUPED


def test_business_envelope_tick_and_resource() -> None:
    biz = parse_business(
        {"event_id": "b1", "timestamp": "2025-01-15 09:31:00", "revenue_impact": "19.99"}, LIMITS
    )
    [(table, row)] = map_message(t.BY_UNIT, 0, 1, env("biz", biz))
    assert table == "finops_curated.business_events" and row["revenue_impact"] == "19.99"
    assert map_message(t.BY_UNIT, 0, 2, orjson.dumps({"k": "tick", "wm": 5, "t": 6})) == []
    assert map_message(t.BY_RESOURCE, 0, 3, orjson.dumps({"k": "tick", "wm": 5})) == []
    res = {
        "event_id": "r1",
        "timestamp": "2025-01-15T09:00:00.000Z",
        "resource_id": "i-1",
        "utilisation": 0.3,
    }
    [(table, row)] = map_message(t.BY_RESOURCE, 0, 4, env("res", res))
    assert table == "finops_curated.resource_events" and row["utilisation"] == 0.3


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[1, 2]", orjson.dumps({"k": "cost"}), orjson.dumps({"k": "what", "e": {}})],
)
def test_malformed_internal_messages_are_validation_errors(value: bytes) -> None:
    with pytest.raises(ValidationError):
        map_message(t.BY_UNIT, 0, 0, value)
    with pytest.raises(ValidationError):
        map_message(t.BY_RESOURCE, 0, 0, value)


def test_raw_input_goes_to_staging_as_variant_with_position() -> None:
    value = orjson.dumps(ARTICLE_COST)
    [(table, row)] = map_message(
        t.COST_EVENTS, 3, 99, value, key=b"i-abc", timestamp_ms=1737000000000, topic_name="x." + t.COST_EVENTS
    )
    assert table == "finops_staging.cost_events_raw"
    assert row["record_content"] == ARTICLE_COST
    assert row["record_metadata"] == {
        "topic": "x.finops.cost.events",
        "partition": 3,
        "offset": 99,
        "key": "i-abc",
        "CreateTime": 1737000000000,
    }
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "x.finops.cost.events",
        3,
        99,
    )
    # invalid JSON on an input topic: skipped (intake dead-lettered it); tombstones too
    assert map_message(t.COST_EVENTS, 0, 1, b"{oops") == []
    assert map_message(t.BUSINESS_EVENTS, 0, 1, None) == []
    with pytest.raises(ValidationError):
        map_message("finops.unknown", 0, 1, b"{}")


def _record(model: type[models._Base]) -> dict:
    """One record of every result model with plausible values."""
    values = {
        "anomaly_id": "a1",
        "anomaly_type": "cost_spike",
        "status": "closed",
        "service": "ec2",
        "business_unit": "eng",
        "region": "us-east-1",
        "series": "service:ec2",
        "current_cost": "250.5",
        "historical_average": "100",
        "deviation_percent": 150.5,
        "score": 6.1,
        "severity": "CRITICAL",
        "drivers": [{"business_unit": "eng", "share": 0.9}],
        "window_start": "2025-01-15T09:00:00.000Z",
        "window_end": "2025-01-15T09:05:00.000Z",
        "timestamp": "2025-01-15T09:06:00.000Z",
        "first_seen": "2025-01-15T09:05:01.000Z",
        "detected_at": "2025-01-15T09:05:02.000Z",
        "detection_latency_ms": 1200,
        "revision": 2,
        "total_cost": "10.25",
        "event_count": 3,
        "cost": "10",
        "revenue": "30",
        "roi": 2.0,
        "cost_events": 2,
        "revenue_events": 5,
        "unit_cost": None,
        "recommendation_id": "r1",
        "resource_id": "i-1",
        "kind": "rightsize",
        "current": "m5.xlarge",
        "proposed": "m5.large",
        "monthly_saving": "61.32",
        "evidence": {"p95": 0.2},
        "alert_id": "al1",
        "month": "2025-01",
        "budget": "1000",
        "spent": "800",
        "forecast": "1200",
        "threshold_percent": 80,
        "action_id": "ac1",
        "dry_run": True,
        "reason": "idle",
        "detail": {},
        "source_topic": "finops.cost.events",
        "partition": 1,
        "offset": 5,
        "error": "bad",
        "field": "cost_amount",
        "raw": base64.b64encode(b"x").decode(),
        "raw_size": 1,
        "stage": "intake",
    }
    return {name: values[name] for name in model._options.fields if name in values}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("topic", "model"),
    [
        (t.ANOMALIES, models.CostAnomaly),
        (t.AGGREGATIONS, models.WindowTotal),
        (t.ROI, models.RoiResult),
        (t.RECOMMENDATIONS, models.Recommendation),
        (t.BUDGET_ALERTS, models.BudgetAlert),
        (t.ACTIONS, models.Action),
        (t.DEADLETTER, models.DeadLetter),
    ],
)
def test_result_records_map_to_their_tables_and_staging(topic: str, model: type[models._Base]) -> None:
    record = model(**_record(model)).to_json_dict()
    out = dict(map_message(topic, 0, 12, orjson.dumps(record)))
    table = RESULT_TABLES[topic][0]
    assert set(out) == {table, f"finops_staging.{RAW_TABLES[topic]}"}
    row = out[table]
    spec = TABLES[table]
    for key in spec.key:
        assert row[key] is not None
    # every non-null column converts: the row is loadable as is
    for col in spec.columns:
        converter(col)(row[col.name])


def test_anomaly_columns_follow_the_article() -> None:
    record = models.CostAnomaly(**_record(models.CostAnomaly)).to_json_dict()
    row = dict(map_message(t.ANOMALIES, 0, 1, orjson.dumps(record)))["finops_aggregated.cost_anomalies"]
    assert row["cost_amount"] == "250.5" and row["expected_amount"] == "100"
    assert row["business_impact"] == "CRITICAL" and row["resolved"] is True
    assert row["source"] == "stream" and row["revision"] == 2
    dl = dict(map_message(t.DEADLETTER, 0, 1, orjson.dumps(_record(models.DeadLetter))))
    assert dl["finops_aggregated.deadletters"]["source_partition"] == 1
    assert dl["finops_aggregated.deadletters"]["source_offset"] == 5


# -- column conversion (what the loader checks before anything reaches Snowflake) -----------------


def test_number_columns_are_exact_and_bounded() -> None:
    money = converter(Column("amount", "NUMBER", 38, 10, False))
    assert money("12.3456789") == Decimal("12.3456789000")
    assert money(0.1) == Decimal("0.1000000000")  # the shortest repr, not 0.1000000000000000055...
    assert money("1.00000000005") == Decimal("1.0000000000")  # half-even at the 10th place
    assert money("9" * 28 + ".5") == Decimal("9" * 28 + ".5")  # 38 digits do fit
    with pytest.raises(ValueError, match="does not fit"):
        money("1" + "0" * 28)  # 29 integer digits do not
    with pytest.raises(ValueError, match="required"):
        money(None)
    for bad in ("abc", True, float("nan"), {"a": 1}):
        with pytest.raises((ValueError, TypeError)):
            money(bad)
    count = converter(Column("n", "NUMBER", 5, 0))
    assert count("42") == 42 and count(None) is None and count("") is None
    with pytest.raises(ValueError):
        count(100000)
    with pytest.raises(ValueError):
        count("1.5")


def test_timestamps_become_naive_utc() -> None:
    ts = converter(Column("ts", "TIMESTAMP_NTZ"))
    assert ts("2025-01-15T09:30:00.000Z") == datetime(2025, 1, 15, 9, 30)
    assert ts("2025-01-15T10:30:00+01:00") == datetime(2025, 1, 15, 9, 30)
    assert ts("2025-01-15 09:30:00") == datetime(2025, 1, 15, 9, 30)
    assert ts(1736933400000) == datetime(2025, 1, 15, 9, 30)
    assert ts("") is None
    with pytest.raises(ValueError):
        ts("yesterday")


def test_variant_text_and_boolean_columns() -> None:
    variant = converter(Column("v", "VARIANT"))
    assert orjson.loads(variant({"a": [1, "x"]})) == {"a": [1, "x"]}
    assert variant("plain") == '"plain"'
    assert variant(None) is None
    text = converter(Column("s", "STRING", nullable=False))
    assert text("") == "" and text(12) == "12"
    with pytest.raises(TypeError):
        text({"a": 1})
    flag = converter(Column("b", "BOOLEAN"))
    assert flag(True) is True and flag("false") is False
    with pytest.raises(ValueError):
        flag("maybe")


def test_merge_sql_dedupes_and_respects_revisions() -> None:
    sql = merge_sql(TABLES["finops_aggregated.window_totals"])
    assert (
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY business_unit, window_start "
        "ORDER BY revision DESC, _seq DESC) = 1" in sql
    )
    assert "WHEN MATCHED AND src.revision >= t.revision THEN UPDATE" in sql
    staging = merge_sql(TABLES["finops_staging.cost_events_raw"])
    assert "WHEN MATCHED" not in staging and "PARSE_JSON(record_content) AS record_content" in staging
    curated = merge_sql(TABLES["finops_curated.cost_events"])
    assert "ORDER BY _seq DESC" in curated and "WHEN MATCHED THEN UPDATE" in curated
    assert "INSERT" in curated and "VALUES (" in curated and "executemany" not in curated


# -- offsets -------------------------------------------------------------------------------------


def test_offsets_commit_only_past_contiguous_handled_messages() -> None:
    tr = OffsetTracker()
    tp = ("topic", 0)
    tr.add(tp, 10, 2)  # two rows (e.g. aggregated + staging)
    tr.add(tp, 11, 0)  # a tick: nothing to load
    tr.add(tp, 12, 1)
    assert tr.committable() == {}
    tr.done(tp, 12)
    assert tr.committable() == {}  # 10 still pending: 12 must not be committed
    tr.done(tp, 10)
    assert tr.committable() == {}  # one row of 10 still pending
    tr.done(tp, 10)
    assert tr.committable() == {tp: 13}
    tr.committed({tp: 13})
    assert tr.committable() == {}  # nothing new
    tr.add(tp, 15, 1)  # offsets may have gaps (compaction, transaction markers)
    tr.done(tp, 15)
    assert tr.committable() == {tp: 16}
    tr.drop(tp)
    assert tr.committable() == {} and tr.pending_offsets() == 0


# -- connection settings (no network) ----------------------------------------------------------


def test_key_pair_auth_loads_an_encrypted_pem_as_der(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from finops_app.config import Secret, Settings
    from finops_app.errors import ConfigError
    from finops_app.sinks.connection import connect_kwargs, describe

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "rsa_key.p8"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-pass"),
        )
    )
    settings = Settings(
        snowflake_account="xy12345.eu-west-1",
        snowflake_user="FINOPS_SVC",
        snowflake_private_key_file=str(pem),
        snowflake_private_key_passphrase=Secret("s3cret-pass"),
        snowflake_role="FINOPS_ROLE",
        snowflake_warehouse="FINOPS_WH",
        snowflake_host="",  # the account's own host
    )
    kwargs = connect_kwargs(settings)
    assert "password" not in kwargs and kwargs["authenticator"] == "SNOWFLAKE_JWT"
    loaded = serialization.load_der_private_key(kwargs["private_key"], password=None)
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    assert {"host", "port", "protocol"}.isdisjoint(kwargs)
    assert kwargs["session_parameters"] == {"TIMEZONE": "UTC"}
    assert (kwargs["role"], kwargs["warehouse"], kwargs["database"]) == ("FINOPS_ROLE", "FINOPS_WH", "FINOPS")
    text = describe(settings) + repr(settings)
    assert "s3cret" not in text and "key pair" in text

    wrong = Settings(
        snowflake_private_key_file=str(pem), snowflake_private_key_passphrase=Secret("nope-pass")
    )
    with pytest.raises(ConfigError) as err:
        connect_kwargs(wrong)
    assert "nope-pass" not in str(err.value) and "PASSPHRASE" in str(err.value)


def test_local_server_uses_host_port_protocol_and_the_password() -> None:
    from finops_app.config import Settings
    from finops_app.sinks.connection import connect_kwargs

    kwargs = connect_kwargs(Settings(snowflake_port=18085), login_timeout=3)
    assert (kwargs["host"], kwargs["port"], kwargs["protocol"]) == ("127.0.0.1", 18085, "http")
    assert kwargs["password"] == "local" and kwargs["login_timeout"] == 3
    assert "private_key" not in kwargs
