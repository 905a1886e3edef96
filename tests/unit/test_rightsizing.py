"""core.rightsizing: bounded utilisation state, p95, recommendations and once-a-day emission."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finops_app.config import Settings
from finops_app.core import rightsizing as rs
from finops_app.core.money import q4s
from finops_app.core.prices import DEFAULT_PRICES, INSTANCE_HOURLY
from finops_app.models import Recommendation

HOUR = 3_600_000
T0 = 1_736_899_200_000  # 2025-01-15T00:00:00Z
SETTINGS = Settings()  # thresholds 0.40 / 0.05, lookback 72 h


def sample(ts_ms: int, u: float, **fields: Any) -> dict[str, Any]:
    """A canonical utilisation sample, as parse_resource returns it."""
    base: dict[str, Any] = {
        "event_id": f"e{ts_ms}",
        "resource_id": "i-0abc",
        "resource_type": "instance",
        "instance_type": "m5.large",
        "metric": "cpu",
        "utilisation": u,
        "hourly_cost": "0",
        "service": "ec2",
        "region": "us-east-1",
        "business_unit": "retail",
        "project_id": "shop",
        "environment": "production",
        "stateless": False,
        "ts_ms": ts_ms,
        "timestamp": "",
        "metadata": {},
    }
    return base | fields


def feed(samples: Iterable[dict[str, Any]], state: rs.State | None = None) -> rs.State:
    out = state or rs.new_state()
    for s in samples:
        out = rs.observe(out, s)
    return out


def hourly(
    values: list[float] | float, hours: int = 72, per_hour: int = 4, **fields: Any
) -> list[dict[str, Any]]:
    """``per_hour`` samples an hour for ``hours`` hours, cycling through ``values``."""
    vals = values if isinstance(values, list) else [values]
    step = HOUR // per_hour
    return [sample(T0 + i * step, vals[i % len(vals)], **fields) for i in range(hours * per_hour)]


def evaluate(samples: list[dict[str, Any]], now_ms: int | None = None) -> list[dict[str, Any]]:
    state = feed(samples)
    now = now_ms if now_ms is not None else samples[-1]["ts_ms"] + 1
    return rs.recommend(state, samples[-1], DEFAULT_PRICES, SETTINGS, now)


def kinds(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in recs}


# -- state and p95 ------------------------------------------------------------------------------


def test_observe_returns_a_new_dict_and_never_mutates() -> None:
    state = feed(hourly(0.3, hours=3))
    before = copy.deepcopy(state)
    after = rs.observe(state, sample(T0 + 3 * HOUR, 0.9))
    assert state == before
    assert after is not state and after != state


def test_state_survives_a_json_round_trip() -> None:
    direct = feed(hourly([0.1, 0.2, 0.3], hours=30))
    state = rs.observe(json.loads(json.dumps(direct)), sample(T0 + 30 * HOUR, 0.4))
    assert json.loads(json.dumps(state)) == state == rs.observe(direct, sample(T0 + 30 * HOUR, 0.4))
    assert rs.p95(state) == pytest.approx(0.31)  # the upper edge of 0.30's 1 % bin


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        ([0.9], 0.9, 0.9),
        ([0.02], 0.02, 0.02),
        ([0.1] * 19 + [0.5], 0.1, 0.11),
        ([i / 100 for i in range(1, 101)], 0.95, 0.96),
    ],
)
def test_p95_table(values: list[float], low: float, high: float) -> None:
    state = feed(sample(T0 + i * 1000, v) for i, v in enumerate(values))
    p = rs.p95(state)
    assert p is not None and low <= p <= high


def test_p95_of_nothing_is_none() -> None:
    assert rs.p95(rs.new_state()) is None
    assert rs.p95(feed([sample(T0, 0.5)]), metric="memory") is None


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300), st.integers(0, 71 * HOUR))
def test_p95_lies_within_the_samples_and_at_most_one_bin_above_the_true_value(
    values: list[float], spread_ms: int
) -> None:
    step = spread_ms // len(values)
    state = feed(sample(T0 + i * step, v) for i, v in enumerate(values))
    p = rs.p95(state)
    ordered = sorted(values)
    true_p95 = ordered[(95 * len(values) + 99) // 100 - 1]
    assert p is not None
    assert min(values) <= p <= max(values)
    assert true_p95 <= p <= true_p95 + 0.01 + 1e-9


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32), st.integers(2000, 5000), st.sampled_from([24, 72, 168]))
def test_state_stays_bounded(seed: int, count: int, lookback: int) -> None:
    rnd = random.Random(seed)  # thousands of points: drawn from a seed, not by Hypothesis one by one
    metrics = ["cpu", "mem", "net", "disk", "gpu"]
    points = sorted((rnd.randrange(40 * 24 * HOUR), rnd.random(), rnd.choice(metrics)) for _ in range(count))
    state = rs.new_state()
    for ts, u, metric in points:
        state = rs.observe(state, sample(T0 + ts, u, metric=metric), lookback_hours=lookback)
    assert len(state["metrics"]) <= rs.MAX_METRICS
    for buckets in state["metrics"].values():
        assert len(buckets) <= lookback + 1
        assert all(len(b["h"]) <= rs.BINS for b in buckets.values())
    assert len(json.dumps(state)) < rs.MAX_METRICS * (lookback + 1) * (rs.BINS * 10 + 200)


def test_samples_older_than_the_lookback_are_dropped() -> None:
    state = feed([sample(T0 + 100 * HOUR, 0.5), sample(T0, 0.9)])
    assert list(state["metrics"]["cpu"]) == [str(T0 + 100 * HOUR)]
    assert rs.p95(state) == 0.5


def test_at_most_max_metrics_are_tracked() -> None:
    names = [f"m{i}" for i in range(rs.MAX_METRICS + 2)]
    state = feed(sample(T0, 0.5, metric=m) for m in names)
    assert sorted(state["metrics"]) == names[: rs.MAX_METRICS]


# -- recommendations ----------------------------------------------------------------------------


def test_no_recommendation_before_24_hours_of_coverage() -> None:
    assert evaluate(hourly(0.02, hours=23)) == []
    assert kinds(evaluate(hourly(0.02, hours=24))).keys() == {"stop_idle"}


def test_only_the_lookback_counts() -> None:
    busy_then_idle = hourly(0.9, hours=72) + [sample(s["ts_ms"] + 72 * HOUR, 0.02) for s in hourly(0.02)]
    assert kinds(evaluate(busy_then_idle)).keys() == {"stop_idle"}


@given(
    st.sampled_from(sorted(INSTANCE_HOURLY)),
    st.sampled_from(["production", "dev", "staging", "unknown"]),
    st.booleans(),
    st.floats(0.4, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_busy_resources_are_never_rightsized_or_stopped(
    itype: str, env: str, stateless: bool, u: float
) -> None:
    recs = evaluate(hourly(u, instance_type=itype, environment=env, stateless=stateless))
    assert not {"rightsize", "stop_idle"} & kinds(recs).keys()


def test_constant_90_percent_gets_nothing() -> None:
    assert evaluate(hourly(0.9)) == []


@given(st.sampled_from(sorted(INSTANCE_HOURLY)))
@settings(max_examples=30, deadline=None)
def test_two_percent_is_stop_idle_saving_the_hourly_price_times_730(itype: str) -> None:
    recs = evaluate(hourly(0.02, instance_type=itype))
    assert [r["kind"] for r in recs] == ["stop_idle"]
    rec = recs[0]
    assert rec["monthly_saving"] == q4s(INSTANCE_HOURLY[itype] * 730)
    assert rec["current"] == itype and rec["proposed"] == "stopped"
    ev = rec["evidence"]
    assert ev["p95"] == 0.02 and ev["max"] == 0.02 and ev["hours_covered"] == 72 and ev["samples"] == 288
    assert ev["prices"]["current_hourly"] == str(INSTANCE_HOURLY[itype])


def test_unknown_type_uses_the_sample_hourly_cost() -> None:
    rec = evaluate(hourly(0.01, instance_type="x9.huge", hourly_cost="0.5"))[0]
    assert rec["kind"] == "stop_idle" and rec["monthly_saving"] == "365.0000"
    assert rec["evidence"]["prices"]["source"] == "sample hourly_cost"


@pytest.mark.parametrize(
    ("itype", "u", "proposed", "saving"),
    [
        ("m5.4xlarge", 0.20, "m5.2xlarge", (Decimal("0.768") - Decimal("0.384")) * 730),
        ("m5.4xlarge", 0.10, "m5.xlarge", (Decimal("0.768") - Decimal("0.192")) * 730),
        ("m5.4xlarge", 0.06, "m5.large", (Decimal("0.768") - Decimal("0.096")) * 730),
        ("t3.large", 0.30, "t3.medium", (Decimal("0.0832") - Decimal("0.0416")) * 730),
    ],
)
def test_rightsize_goes_down_while_projected_p95_stays_under_60_percent(
    itype: str, u: float, proposed: str, saving: Decimal
) -> None:
    rec = kinds(evaluate(hourly(u, instance_type=itype)))["rightsize"]
    assert rec["current"] == itype and rec["proposed"] == proposed
    assert rec["monthly_saving"] == q4s(saving)
    assert rec["evidence"]["projected_p95"] <= rs.TARGET_P95


@pytest.mark.parametrize(("itype", "u"), [("m5.large", 0.2), ("m5.xlarge", 0.35), ("x9.huge", 0.1)])
def test_no_rightsize_without_a_smaller_size_that_fits(itype: str, u: float) -> None:
    assert "rightsize" not in kinds(evaluate(hourly(u, instance_type=itype)))


def test_the_busiest_metric_decides() -> None:
    cpu = hourly(0.02)
    memory = [s | {"metric": "memory", "utilisation": 0.8, "ts_ms": s["ts_ms"] + 1} for s in cpu]
    recs = rs.recommend(feed(cpu + memory), cpu[-1], DEFAULT_PRICES, SETTINGS, T0 + 72 * HOUR)
    assert recs == []


SPOT_OK: dict[str, Any] = {"stateless": True, "environment": "dev"}


def test_spot_for_steady_stateless_non_production() -> None:
    rec = kinds(evaluate(hourly([0.5, 0.55], **SPOT_OK)))["spot"]
    assert rec["proposed"] == "m5.large (spot)"
    assert rec["monthly_saving"] == q4s(Decimal("0.096") * Decimal("0.60") * 730)
    assert rec["evidence"]["cv"] <= rs.SPOT_MAX_CV


@pytest.mark.parametrize(
    "change",
    [
        {"environment": "production"},
        {"environment": "unknown"},
        {"stateless": False},
        {"metadata": {"lifecycle": "spot"}},
        {"instance_type": "x9.large", "hourly_cost": "1"},  # family without a spot discount
    ],
)
def test_no_spot_when_a_condition_fails(change: dict[str, Any]) -> None:
    assert "spot" not in kinds(evaluate(hourly(0.5, **(SPOT_OK | change))))


def test_no_spot_for_unsteady_use() -> None:
    assert "spot" not in kinds(evaluate(hourly([0.1, 0.9], **SPOT_OK)))


def test_idle_stateless_dev_is_stopped_not_moved_to_spot() -> None:
    assert kinds(evaluate(hourly(0.01, **SPOT_OK))).keys() == {"stop_idle"}


BUCKET: dict[str, Any] = {
    "resource_type": "bucket",
    "instance_type": "",
    "resource_id": "logs-bucket",
    "service": "s3",
}


@pytest.mark.parametrize(
    ("u", "fields", "proposed", "saving"),
    [
        (0.08, {"metadata": {"size_gb": 1000}}, "STANDARD_IA", "10.5000"),
        (0.01, {"metadata": {"size_gb": 1000}}, "GLACIER_IR", "19.0000"),
        (0.08, {"metadata": {"storage_class": "STANDARD_IA", "size_gb": "100"}}, "GLACIER_IR", "0.8500"),
        (
            0.08,
            {"hourly_cost": "0.1"},
            "STANDARD_IA",
            q4s(Decimal("73") * (1 - Decimal("0.0125") / Decimal("0.023"))),
        ),
        (
            0.08,
            {"resource_type": "volume", "instance_type": "gp3", "metadata": {"size_gb": 500}},
            "st1",
            "17.5000",
        ),
    ],
)
def test_storage_tier(u: float, fields: dict[str, Any], proposed: str, saving: str) -> None:
    recs = evaluate(hourly(u, **(BUCKET | fields)))
    assert [r["kind"] for r in recs] == ["storage_tier"]
    assert recs[0]["proposed"] == proposed and recs[0]["monthly_saving"] == saving


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": {"size_gb": 1000}, "utilisation": 0.5},
        {"metadata": {"storage_class": "GLACIER_IR", "size_gb": 1000}},
        {"metadata": {}},  # neither a size nor a cost: no saving to show
    ],
)
def test_no_storage_tier(fields: dict[str, Any]) -> None:
    u = fields.pop("utilisation", 0.02)
    assert evaluate(hourly(u, **(BUCKET | fields))) == []


def test_recommendations_are_valid_records_with_stable_ids() -> None:
    samples = hourly(0.15, instance_type="m5.2xlarge", **SPOT_OK)
    first, again = evaluate(samples), evaluate(samples)
    assert kinds(first).keys() == {"rightsize", "spot"}
    assert [r["recommendation_id"] for r in first] == [r["recommendation_id"] for r in again]
    assert len({r["recommendation_id"] for r in first}) == 2
    next_day = evaluate(samples, now_ms=samples[-1]["ts_ms"] + 24 * HOUR)
    assert not {r["recommendation_id"] for r in next_day} & {r["recommendation_id"] for r in first}
    for rec in first:
        assert Recommendation(**rec).to_json_dict()["monthly_saving"] == rec["monthly_saving"]
        json.dumps(rec)


# -- evaluation and emission --------------------------------------------------------------------


def test_reevaluate_at_most_hourly_and_emit_once_a_day_unless_changed() -> None:
    samples = hourly(0.02)
    state = feed(samples)
    now = T0 + 72 * HOUR + 1  # just after midnight: the next two hours are the same day
    assert not rs.should_reevaluate(rs.new_state(), now)
    assert rs.should_reevaluate(state, now)
    recs = rs.recommend(state, samples[-1], DEFAULT_PRICES, SETTINGS, now)
    state, emit = rs.mark_evaluated(state, recs, now)
    assert emit == recs and len(emit) == 1
    assert not rs.should_reevaluate(state, now + HOUR - 1)
    assert rs.should_reevaluate(state, now + HOUR)
    state, emit = rs.mark_evaluated(state, recs, now + HOUR)
    assert emit == []  # same recommendation, same day
    changed = [recs[0] | {"kind": "rightsize", "proposed": "t3.micro"}]
    state, emit = rs.mark_evaluated(state, changed, now + 2 * HOUR)
    assert emit == changed
    state, emit = rs.mark_evaluated(state, changed, now + 24 * HOUR)
    assert emit == changed  # a new day
