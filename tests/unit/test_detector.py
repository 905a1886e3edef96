"""core.detector: EW level/variance, warm-up, incidents, level shifts, daily profile, bounds, state dict."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finops_app.core.detector import DetectorParams, Verdict, bounds, new_state, update

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STEP = 300_000  # 5 minutes
UP = DetectorParams()
BOTH = DetectorParams(direction="both")
Run = tuple[dict[str, Any], list[Verdict]]


def run(values: Iterable[float], params: DetectorParams = UP, step: int = STEP, t0: int = T0) -> Run:
    state, out = new_state(), []
    for i, v in enumerate(values):
        state, verdict = update(state, t0 + i * step, v, params)
        out.append(verdict)
    return state, out


def alerts(verdicts: list[Verdict]) -> list[int]:
    return [i for i, v in enumerate(verdicts) if v.is_anomaly]


def noisy(n: int, f: Callable[[int], float], sd: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [f(i) + rng.gauss(0, sd) for i in range(n)]


def all_finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(all_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


# -- basics -------------------------------------------------------------------------------------------


def test_constant_series_is_its_own_mean_and_never_alerts() -> None:
    state, verdicts = run([42.5] * 500, BOTH)
    assert state["lvl"] == pytest.approx(42.5, rel=1e-12)
    assert verdicts[-1].expected == pytest.approx(42.5, rel=1e-12)
    assert verdicts[-1].z == pytest.approx(0.0, abs=1e-6)
    assert verdicts[-1].deviation_percent == pytest.approx(0.0, abs=1e-9)
    assert not alerts(verdicts)
    assert max(v.score for v in verdicts) < 0.01


def test_zero_series_has_no_deviation_percent_and_a_jump_from_zero_alerts() -> None:
    state, verdicts = run([0.0] * 100)
    assert verdicts[-1].deviation_percent is None
    assert not alerts(verdicts)
    _, v = update(state, T0 + 100 * STEP, 5.0, UP)
    assert v.is_anomaly and v.deviation_percent is None


def test_a_series_expected_below_the_money_precision_has_no_deviation_percent() -> None:
    """Expected at 2e-9 dollars, a $10,000 spike was a deviation of 5e14 %: no NUMBER(18, 4) column
    holds it, so the sink dead-lettered every revision of the anomaly."""
    state, _ = run([2e-9] * 100)
    _, v = update(state, T0 + 100 * STEP, 10_000.0, UP)
    assert v.is_anomaly and v.deviation_percent is None
    state, _ = run([0.01] * 100)
    _, v = update(state, T0 + 100 * STEP, 1000.0, UP)
    assert v.deviation_percent is not None and 9e6 < v.deviation_percent < 1e14


def test_warm_up_never_alerts_and_scores_zero() -> None:
    values = [10.0, 10.5, 9.5] * 9 + [1e6]  # 28 points: inside the 30-point warm-up
    _, verdicts = run(values)
    assert all(v.warming_up for v in verdicts)
    assert not alerts(verdicts)
    assert all(v.score == 0.0 for v in verdicts)


def test_warm_up_also_needs_elapsed_time() -> None:
    # 100 points one second apart: enough points, not enough time (warmup_seconds = 3600)
    _, verdicts = run([*noisy(100, lambda i: 10.0, 0.5), 1e6], step=1000)
    assert verdicts[-1].warming_up and not verdicts[-1].is_anomaly


def test_spike_after_warm_up_is_flagged_at_once_with_severity_fields() -> None:
    values = noisy(400, lambda i: 100.0, 2.0)
    values[300] = 160.0
    _, verdicts = run(values)
    assert alerts(verdicts) == [300]
    v = verdicts[300]
    assert v.expected == pytest.approx(100.0, abs=2.0)
    assert 0.5 < v.std < 5.0
    assert v.z > 10
    assert v.score > 0.99
    assert v.deviation_percent == pytest.approx(60.0, abs=4.0)
    assert v.incident_open and v.incident_started_ms == T0 + 300 * STEP
    assert not v.warming_up
    # the next, normal points continue (then close) the incident; none alerts again
    assert not verdicts[301].is_anomaly and verdicts[301].incident_started_ms == T0 + 300 * STEP
    assert not verdicts[399].incident_open


def test_spike_does_not_blow_up_the_variance() -> None:
    values = noisy(400, lambda i: 100.0, 2.0)
    values[300] = 10_000.0
    state, verdicts = run(values)
    assert verdicts[299].std == pytest.approx(verdicts[310].std, rel=0.25)
    assert state["lvl"] == pytest.approx(100.0, abs=2.0)


def test_direction_up_ignores_drops_and_both_flags_them() -> None:
    values = noisy(400, lambda i: 100.0, 2.0)
    values[300] = 40.0
    assert not alerts(run(values, UP)[1])
    assert alerts(run(values, BOTH)[1]) == [300]


def test_min_abs_deviation_silences_small_excesses() -> None:
    values = noisy(400, lambda i: 5.0, 0.01)
    values[300] = 5.5  # 50 std, but only 0.5 above expectation
    assert alerts(run(values)[1]) == [300]
    assert not alerts(run(values, DetectorParams(min_abs_deviation=1.0))[1])


def test_non_finite_value_is_refused_and_bad_params_too() -> None:
    with pytest.raises(ValueError, match="finite"):
        update(new_state(), T0, math.nan, UP)
    with pytest.raises(ValueError, match="direction"):
        DetectorParams(direction="down")  # type: ignore[arg-type]


# -- incidents, level shifts, drifts -----------------------------------------------------------------------


def test_level_shift_alerts_once_then_rebaselines() -> None:
    values = noisy(1200, lambda i: 50.0 if i < 600 else 80.0, 2.0)
    _, verdicts = run(values, BOTH)
    assert alerts(verdicts) == [600]
    assert verdicts[700].expected == pytest.approx(80.0, abs=2.0)
    assert not verdicts[-1].incident_open


def test_recovery_after_an_outage_stays_in_the_incident() -> None:
    values = noisy(1200, lambda i: 20.0 if 600 <= i < 624 else 60.0, 2.0)  # two hours down, then back
    _, verdicts = run(values, BOTH)
    assert alerts(verdicts) == [600]


def test_slow_drift_never_alerts() -> None:
    _, verdicts = run(noisy(3000, lambda i: 100.0 + 60.0 * i / 3000, 4.0), BOTH)
    assert not alerts(verdicts)


def test_runaway_growth_alerts_early_and_once() -> None:
    values = noisy(2000, lambda i: 10.0 + (0.1 * (i - 1000) if i >= 1000 else 0.0), 0.5)
    found = alerts(run(values)[1])
    assert len(found) == 1
    assert 1000 <= found[0] <= 1030


def test_refractory_period_separates_alerts() -> None:
    values = noisy(600, lambda i: 100.0, 2.0)
    values[300] = values[312] = values[400] = 160.0
    _, verdicts = run(values)
    # 300 opens, closes after 6 calm points (306); 312 falls in the 12-point refractory; 400 alerts
    assert alerts(verdicts) == [300, 400]


def test_low_volume_count_series_raises_no_alert_storm() -> None:
    rng = random.Random(3)
    counts = [float(sum(rng.random() < 0.02 for _ in range(100))) for _ in range(2000)]  # ~Poisson(2)
    assert len(alerts(run(counts, BOTH)[1])) <= 2


def test_frequent_bursts_widen_the_band() -> None:
    rng = random.Random(4)
    values = [50 + rng.gauss(0, 2) + (rng.uniform(16, 40) if rng.random() < 0.02 else 0) for _ in range(3000)]
    state, verdicts = run(values, BOTH)
    assert state["tail"] > 2.0  # the 99.9th percentile of |z| is far beyond a normal one
    assert len(alerts(verdicts[1500:])) <= 3  # ~30 bursts in the second half, 8 to 20 std each


def test_gap_in_time_stamps_does_not_alert() -> None:
    rng = random.Random(5)
    times = [T0 + i * STEP for i in range(600)] + [T0 + (600 + 72 + i) * STEP for i in range(300)]  # 6 h gap
    state, count = new_state(), 0
    for t in times:
        state, verdict = update(state, t, 100.0 + rng.gauss(0, 3), BOTH)
        count += verdict.is_anomaly
    assert count == 0


# -- daily seasonality -------------------------------------------------------------------------------------


def daily(i: int) -> float:
    hour = (i * STEP / 3_600_000) % 24
    return 100.0 + 40.0 * math.sin(2 * math.pi * (hour - 9) / 24)


def test_daily_pattern_is_learned_and_an_off_pattern_value_alerts() -> None:
    n = 288 * 7
    values = noisy(n, daily, 2.0, seed=11)
    night = 288 * 6 + 36  # day 6, 03:00: the pattern is near its low (~67)
    values[night] = 140.0  # a normal afternoon value, far off the pattern at night
    state, verdicts = run(values, BOTH)
    assert state["seas"]
    assert not alerts(verdicts[288 * 3 : night])
    assert alerts(verdicts[night : night + 1]) == [0]
    assert verdicts[night].expected == pytest.approx(daily(night), abs=4.0)
    assert verdicts[288 * 6 + 180].expected == pytest.approx(daily(288 * 6 + 180), abs=4.0)


def test_non_seasonal_series_keeps_the_plain_model() -> None:
    state, _ = run(noisy(288 * 4, lambda i: 50.0, 3.0), BOTH)
    assert not state["seas"]


# -- bounds ------------------------------------------------------------------------------------------------


def test_bounds_are_infinite_while_no_alert_is_possible() -> None:
    assert bounds(new_state(), T0, UP)[1] == math.inf
    values = noisy(400, lambda i: 100.0, 2.0)
    state, _ = run(values[:300])
    expected, upper = bounds(state, T0 + 300 * STEP, UP)
    assert expected == pytest.approx(100.0, abs=2.0)
    assert expected < upper < expected + 20
    state, verdict = update(state, T0 + 300 * STEP, upper + 1.0, UP)
    assert verdict.is_anomaly
    assert bounds(state, T0 + 301 * STEP, UP)[1] == math.inf  # the incident is open


series_st = st.lists(st.floats(min_value=0.0, max_value=1000.0), min_size=35, max_size=60)


@settings(max_examples=30, deadline=None)
@given(
    series=series_st,
    factor=st.floats(min_value=0.0, max_value=3.0),
    direction=st.sampled_from(["up", "both"]),
)
def test_bounds_agree_with_update(series: list[float], factor: float, direction: str) -> None:
    params = dataclasses.replace(UP, direction=direction, warmup_seconds=0.0)  # type: ignore[arg-type]
    state, _ = run(series, params, step=60_000)
    ts = T0 + len(series) * 60_000
    expected, upper = bounds(state, ts, params)
    if math.isinf(upper):
        assert state["inc"] or state["refr"] > 0 or state["n"] < params.warmup_points
        return
    value = expected + factor * (upper - expected)
    _, verdict = update(state, ts, value, params)
    assert verdict.is_anomaly == (value > upper)
    if abs(value - upper) > 1e-6 * verdict.std:  # the score is 0.5 on the bound
        assert (verdict.score > 0.5) == (value > upper)


# -- the state dict ----------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=60),
    steps=st.lists(st.integers(min_value=0, max_value=10 * 86_400_000), min_size=60, max_size=60),
)
def test_state_is_json_and_update_is_pure(values: list[float], steps: list[int]) -> None:
    state, ts = new_state(), T0
    for value, step in zip(values, steps, strict=False):
        ts += step
        before = copy.deepcopy(state)
        new, verdict = update(state, ts, value, BOTH)
        assert state == before  # the input is not mutated
        assert orjson.loads(orjson.dumps(new)) == new
        assert all_finite(new)
        assert 0.0 <= verdict.score <= 1.0
        assert math.isfinite(verdict.expected) and math.isfinite(verdict.std) and verdict.std > 0
        state = new


@settings(max_examples=25, deadline=None)
@given(base=st.floats(min_value=-1e6, max_value=1e6), noise=st.lists(finite, min_size=40, max_size=40))
def test_score_stays_in_unit_interval_for_any_finite_input(base: float, noise: list[float]) -> None:
    state = new_state()
    for i, x in enumerate(noise):
        for params in (UP, BOTH):
            _, verdict = update(state, T0 + i * STEP, x, params)
            assert 0.0 <= verdict.score <= 1.0
        state, _ = update(state, T0 + i * STEP, base, UP)


def test_state_survives_a_json_round_trip_mid_series() -> None:
    values = noisy(288 * 3, daily, 2.0)
    state, _ = run(values[:500], BOTH)
    restored = orjson.loads(orjson.dumps(state))
    a, b = state, restored
    for i, v in enumerate(values[500:], start=500):
        a, va = update(a, T0 + i * STEP, v, BOTH)
        b, vb = update(b, T0 + i * STEP, v, BOTH)
        assert va == vb
    assert a == b
