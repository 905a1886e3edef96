"""Malformed result records: the sink rejects them at once, the dashboard's store skips them.

No Snowflake, no Kafka: the loader's conversion pass runs before any connection is needed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from finops_app import topics
from finops_app.sinks.loader import BulkLoader, Column, converter
from finops_app.sinks.rows import TABLES, map_message
from finops_app.web.store import ResultStore, ms


def _no_snowflake() -> Any:
    raise AssertionError("this load should not need Snowflake")


# -- 1. a huge exponent in an integer column: int(d) before the size check ----------------------------


def test_huge_exponent_in_an_integer_column_is_rejected_quickly() -> None:
    """A whole-number column checks the size before int(): '1e300000' made a 300,001-digit int
    (~3 s), '1e999999999' never finished and held the sink's loader thread for good."""
    conv = converter(Column("event_count", "NUMBER", 18, 0))
    started = time.perf_counter()
    with pytest.raises(ValueError, match="does not fit"):
        conv("1e300000")
    assert time.perf_counter() - started < 0.5


def test_a_huge_event_count_is_rejected_without_stalling_the_load(tmp_path: Path) -> None:
    """The same through the sink's own path: a window total read from Kafka, mapped, loaded."""
    value = orjson.dumps(
        {
            "business_unit": "eng",
            "total_cost": "10.0000",
            "event_count": "1e300000",  # ("1e999999999" held the loader thread for good)
            "window_start": "2025-01-15T09:00:00.000Z",
            "window_end": "2025-01-15T09:05:00.000Z",
            "revision": 1,
        }
    )
    [(table, row), _staging] = map_message(topics.AGGREGATIONS, 0, 7, value)
    started = time.perf_counter()
    result = BulkLoader(_no_snowflake, workdir=tmp_path).load(TABLES[table], [row])
    assert [r.index for r in result.rejected] == [0]
    assert time.perf_counter() - started < 0.5


# -- 2. web store: a first record with an unusable revision hides every later revision ---------------


def _roi_record(revision: Any) -> dict[str, Any]:
    return {
        "business_unit": "eng",
        "cost": "10.0000",
        "revenue": "20.0000",
        "roi": 1.0,
        "cost_events": 1,
        "revenue_events": 1,
        "unit_cost": "10.0000",
        "window_start": "2025-01-15T09:00:00.000Z",
        "window_end": "2025-01-15T10:00:00.000Z",
        "timestamp": "2025-01-15T10:00:01.000Z",
        "revision": revision,
    }


def test_roi_later_revision_replaces_a_first_record_with_a_null_revision() -> None:
    """A first record with revision null was kept (the revision was read only when an old record
    existed), and every later record of that window then failed on it and was skipped."""
    store = ResultStore()
    with pytest.raises(TypeError):  # the consumer counts it as a bad record
        store.apply(topics.ROI, _roi_record(None))
    store.apply(topics.ROI, _roi_record(2))
    assert store.roi["eng"][ms("2025-01-15T09:00:00.000Z")]["revision"] == 2


def test_anomaly_later_revision_replaces_a_first_record_with_a_null_revision() -> None:
    """The same for anomalies."""
    rec = {
        "anomaly_id": "a1",
        "status": "open",
        "current_cost": "5.0000",
        "drivers": [],
        "detection_latency_ms": 10,
        "revision": None,
    }
    store = ResultStore()
    with pytest.raises(TypeError):
        store.apply(topics.ANOMALIES, rec)
    store.apply(topics.ANOMALIES, dict(rec, status="updated", current_cost="9.0000", revision=2))
    assert store.anomalies["a1"]["revision"] == 2
