"""ResultStore and the JSON queries over it: revisions replace, horizons fold, KPIs add up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from finops_app import topics
from finops_app.core.validate import iso
from finops_app.web import queries
from finops_app.web.store import DAY_MS, HOUR_MS, ResultStore, ms

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
W = 300_000


def window(unit: str, start: int, total: str, revision: int = 1, count: int = 3) -> dict[str, Any]:
    return {
        "business_unit": unit,
        "total_cost": total,
        "event_count": count,
        "window_start": iso(start),
        "window_end": iso(start + W),
        "revision": revision,
        "currency": "USD",
        "late": revision > 1,
    }


def anomaly(aid: str, status: str, cost: str, revision: int, latency: int = 1500) -> dict[str, Any]:
    return {
        "anomaly_id": aid,
        "anomaly_type": "cost_spike",
        "status": status,
        "service": "ec2",
        "business_unit": "ecommerce",
        "region": "*",
        "series": "ec2|bu=ecommerce",
        "current_cost": cost,
        "historical_average": "1.0000",
        "deviation_percent": 400.0,
        "score": 0.9,
        "severity": "CRITICAL",
        "drivers": [],
        "window_start": iso(T0 + revision * W),
        "window_end": iso(T0 + (revision + 1) * W),
        "timestamp": iso(T0),
        "first_seen": iso(T0 + W),
        "detected_at": iso(T0 + revision * W),
        "detection_latency_ms": latency,
        "revision": revision,
    }


def test_ms_reads_iso_with_z_and_naive_as_utc() -> None:
    assert ms("2026-01-01T00:00:00.000Z") == T0
    assert ms("2026-01-01 00:00:00") == T0


def test_a_revision_replaces_the_window_and_an_older_one_does_not() -> None:
    store = ResultStore()
    store.apply(topics.AGGREGATIONS, window("eng", T0, "10.0000"))
    store.apply(topics.AGGREGATIONS, window("eng", T0, "12.5000", revision=2))
    store.apply(topics.AGGREGATIONS, window("eng", T0, "10.0000", revision=1))  # redelivered original
    body = queries.windows(store)
    assert [(w["total_cost"], w["revision"]) for w in body["windows"]] == [("12.5000", 2)]
    assert body["totals"] == {"eng": "12.5000"}


def test_old_windows_fold_into_daily_sums_and_month_to_date_stays_exact() -> None:
    store = ResultStore(horizon_ms=HOUR_MS)
    for k in range(48):  # four hours of 5-minute windows, 1.25 each
        store.apply(topics.AGGREGATIONS, window("eng", T0 + k * W, "1.2500"))
    assert len(store.windows["eng"]) <= 13  # about an hour is held
    assert sum(store.daily().values()) == Decimal("60.0000")
    body = queries.budgets(store, {"eng": Decimal("100")})
    (row,) = body["units"]
    assert body["month"] == "2026-01"
    assert (row["spent"], row["budget"], row["burn_percent"]) == ("60.0000", "100.0000", 60.0)
    assert row["forecast"] is None  # the month's first 24 hours give no forecast


def test_a_unit_read_late_from_its_own_partition_still_counts() -> None:
    store = ResultStore(horizon_ms=HOUR_MS)
    for k in range(48):  # one partition read to the end first ...
        store.apply(topics.AGGREGATIONS, window("eng", T0 + k * W, "1"))
    for k in range(48):  # ... then the other one from the start of the look-back
        store.apply(topics.AGGREGATIONS, window("ops", T0 + k * W, "2"))
    daily = store.daily()
    assert (daily[("eng", "2026-01-01")], daily[("ops", "2026-01-01")]) == (Decimal(48), Decimal(96))


def test_windows_filters_by_unit_and_hours() -> None:
    store = ResultStore()
    for k in range(24):
        store.apply(topics.AGGREGATIONS, window("eng", T0 + k * W, "1"))
        store.apply(topics.AGGREGATIONS, window("ops", T0 + k * W, "2"))
    body = queries.windows(store, unit="ops", hours=1)
    assert body["units"] == ["ops"]
    assert len(body["windows"]) == 12
    assert body["as_of"] == iso(T0 + 24 * W)


def test_anomaly_keeps_latest_revision_peak_and_open_latency() -> None:
    store = ResultStore()
    store.apply(topics.ANOMALIES, anomaly("a1", "open", "5.0000", 1, latency=800))
    store.apply(topics.ANOMALIES, anomaly("a1", "updated", "9.0000", 2, latency=4000))
    store.apply(topics.ANOMALIES, anomaly("a1", "closed", "1.0000", 3))
    store.apply(topics.ANOMALIES, anomaly("a2", "open", "3.0000", 1, latency=1200))
    assert queries.anomalies(store, "open")["count"] == 1
    everything = queries.anomalies(store, "all")
    a1 = next(a for a in everything["anomalies"] if a["anomaly_id"] == "a1")
    assert (a1["status"], a1["peak_cost"], a1["open_detection_latency_ms"]) == ("closed", "9.0000", 800)
    k = queries.kpis(store, now_ms=T0 + DAY_MS)
    assert k["detection_latency_ms"] == {"p50": 800, "p95": 1200, "samples": 2}
    assert k["open_anomalies"] == 1


def test_anomalies_are_bounded_dropping_closed_ones_first() -> None:
    store = ResultStore(max_items=2)
    store.apply(topics.ANOMALIES, anomaly("old-open", "open", "2", 1))
    store.apply(topics.ANOMALIES, anomaly("closed", "closed", "2", 1))
    store.apply(topics.ANOMALIES, anomaly("new", "open", "2", 1))
    assert list(store.anomalies) == ["old-open", "new"]


def test_kpis_share_of_cost_attributed_and_roi_freshness() -> None:
    store = ResultStore()
    store.apply(topics.AGGREGATIONS, window("eng", T0, "75"))
    store.apply(topics.AGGREGATIONS, window("unallocated", T0, "25"))
    store.apply(
        topics.ROI,
        {
            "business_unit": "eng",
            "cost": "75.0000",
            "revenue": "150.0000",
            "roi": 1.0,
            "cost_events": 3,
            "revenue_events": 2,
            "unit_cost": "37.5000",
            "window_start": iso(T0),
            "window_end": iso(T0 + 6 * W),
            "timestamp": iso(T0 + 7 * W),
            "revision": 1,
        },
    )
    k = queries.kpis(store, now_ms=T0 + 7 * W + 30_000)
    assert k["cost_attribution"]["allocated_share"] == 0.75
    assert k["cost_attribution"]["unallocated_cost"] == "25.0000"
    assert k["roi_freshness_seconds"] == 30.0
    assert k["forecast_error"] is None
    roi = queries.roi(store)
    assert roi["units"][0]["roi"] == 1.0 and roi["units"][0]["latest"]["revenue"] == "150.0000"


def test_forecast_error_appears_with_enough_whole_days() -> None:
    store = ResultStore(horizon_ms=HOUR_MS)
    for day in range(12):
        for k in range(0, 288, 12):  # one window an hour is enough for daily sums
            store.apply(topics.AGGREGATIONS, window("eng", T0 + day * DAY_MS + k * W, str(100 + day)))
    fe = queries.forecast_error(store)
    assert fe is not None and fe["days"] == 10 and fe["mape_percent"] < 1.0


def test_recommendations_keep_the_newest_per_resource_and_kind() -> None:
    store = ResultStore()
    base = {
        "resource_id": "i-1",
        "kind": "rightsize",
        "business_unit": "eng",
        "service": "ec2",
        "region": "x",
    }
    for rid, ts, saving in (("r1", T0, "10"), ("r2", T0 + DAY_MS, "12")):
        rec = {**base, "recommendation_id": rid, "current": "m5.2xlarge", "proposed": "m5.xlarge"}
        store.apply(
            topics.RECOMMENDATIONS, {**rec, "monthly_saving": saving, "evidence": {}, "timestamp": iso(ts)}
        )
    body = queries.recommendations(store)
    assert body["count"] == 1 and body["monthly_saving_total"] == "12.0000"


def test_dead_letters_are_counted_without_their_raw_bytes() -> None:
    store = ResultStore()
    dl = {"source_topic": "finops.cost.events", "error": "not valid JSON", "raw": "e30=", "stage": "intake"}
    store.apply(topics.DEADLETTER, {**dl, "timestamp": iso(T0)})
    body = queries.deadletters(store, total=7)
    assert body["total"] == 7 and body["seen"] == 1
    assert "raw" not in body["recent"][0]
    assert body["by_source_topic"] == {"finops.cost.events": 1}


def test_a_bad_record_raises_for_the_caller_to_count() -> None:
    store = ResultStore()
    with pytest.raises(KeyError):
        store.apply(topics.AGGREGATIONS, {"business_unit": "x"})
    with pytest.raises(ValueError, match="not a result topic"):
        store.apply(topics.COST_EVENTS, {})


def test_percentile_is_nearest_rank() -> None:
    assert queries.percentile([], 0.5) is None
    assert queries.percentile([5], 0.95) == 5
    assert queries.percentile(list(range(1, 101)), 0.95) == 95
