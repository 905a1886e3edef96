"""Anomaly detector: a series' state dict plus one (timestamp, value) point in, a new state and a Verdict out.

Pure functions over a small JSON-serialisable dict (nothing is mutated; no I/O). Per series:

* **Level and spread.** An exponentially weighted (EW) mean and an EW variance of the one-step prediction
  error. Smoothing comes from half-lives counted in *points*, so one default fits 1-minute and 1-hour data;
  the first points use a running mean (``alpha >= 1/n``). A gap of ``k`` typical intervals counts as up to
  ``k`` steps and widens the band by up to ``gap_std_max``.
* **Daily profile.** An EW mean of the value per time-of-day bin (UTC; 24 to 96 bins, about 3 points per
  bin per day; linear interpolation between bin centres; half-life ``season_half_life_days``) plus a fast
  EW offset form a second model. It engages after ``season_min_days`` once its error variance is below
  ``season_gain`` times the plain model's, for good (a fading pattern flattens the profile).
* **Robustness.** The std has floors (``rel_std_floor * |level|``; deviations under ``min_abs_deviation``
  never alert) and a tail factor: an online ``tail_quantile`` of ``|z|`` over its normal value widens the
  band of heavy-tailed series. After warm-up the values feeding the level and variance are clipped at
  ``clip_z`` std. ``shift_points`` points in a row beyond ``shift_z`` std on one side re-base the level on
  their mean (a lasting level shift alerts once, then stops).
* **Alerts.** A value is anomalous beyond ``z_threshold`` std (in ``direction``), or when the EW mean of
  clipped z (half-life ``sustain_half_life_points``) passes ``max(sustain_min, sustain_z * its RMS)``: a
  sustained moderate deviation such as a runaway ramp. ``is_anomaly`` is true only on the point that opens
  an incident (after warm-up, outside the refractory period); the incident closes after ``calm_points``
  points within ``close_z`` std (``settle_points`` if the level was re-based in it, so a recovery stays in
  the same incident), then ``refractory_points`` points pass before the next alert.

``score`` is the normal CDF of the distance beyond the alert bound in std: 0.5 exactly on the bound, more
outside it, near 0 well inside; 0 during warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal, NamedTuple

State = dict[str, Any]
DAY_MS = 86_400_000
MAX_ABS = 1e100  # values are clamped to this so squares never overflow into inf (not JSON)
VERSION = 1
MIN_EXPECTED = 1e-4  # below it, deviation_percent is None (expected ~ 0)


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """Detector settings; the defaults are the one set chosen with ``bench/detector_eval.py`` (all series)."""

    direction: Literal["up", "both"] = "up"  # "up": only spikes alert (cost); "both": drops too
    z_threshold: float = 4.0  # alert when the value is this many std beyond the expected value
    half_life_points: float = 24.0  # level half-life, in points
    var_half_life_points: float = 96.0  # variance half-life, in points
    clip_z: float = 3.0  # values feeding level/variance are clipped to expected +- clip_z * std
    rel_std_floor: float = 0.02  # std is at least this fraction of |level|
    min_abs_deviation: float = 0.0  # smaller deviations never alert (cost: FINOPS_ANOMALY_MIN_AMOUNT)
    warmup_points: int = 30  # no alert before this many points ...
    warmup_seconds: float = 3600.0  # ... and this much time since the first point
    close_z: float = 2.0  # an incident point is calm when within this many std
    calm_points: int = 6  # consecutive calm points that close an incident ...
    settle_points: int = 36  # ... or this many once the level was re-based in it (a recovery stays in it)
    refractory_points: int = 12  # points after a close before a new alert
    shift_z: float = 3.0  # a run of points beyond this many std on one side ...
    shift_points: int = 4  # ... this long re-bases the level on the run's mean
    sustain_z: float = 5.0  # also alert when the EW mean of clipped z exceeds this many of its own RMS ...
    sustain_min: float = 1.5  # ... and this many std (a sustained moderate deviation: a ramp, a small shift)
    sustain_half_life_points: float = 3.0  # half-life of that mean, in points (0 disables the test)
    tail_quantile: float = 0.999  # the band widens when this quantile of |z| exceeds the normal one ...
    tail_rate: float = 0.2  # ... as learned online at this rate (0 disables it)
    gap_factor: float = 3.0  # an interval over this many typical intervals is a gap: the band widens
    gap_std_max: float = 2.0  # by at most this factor
    season_min_days: float = 2.0  # days of data before the daily profile may engage
    season_half_life_days: float = 3.0  # half-life of each time-of-day bin of the profile, in days
    season_gain: float = 0.5  # engage when the error variance with the profile < this times without

    def __post_init__(self) -> None:
        if self.direction not in ("up", "both"):
            raise ValueError(f"direction must be 'up' or 'both', not {self.direction!r}")
        if self.z_threshold <= 0 or self.half_life_points <= 0 or self.var_half_life_points <= 0:
            raise ValueError("z_threshold and half-lives must be positive")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one point looked like against the series' history."""

    expected: float
    std: float
    z: float  # signed (value - expected) / std
    score: float  # in [0, 1]; 0.5 at the alert bound
    deviation_percent: float | None  # (value - expected) / expected * 100; None when expected ~ 0
    is_anomaly: bool  # this point opens a new incident: alert on it
    incident_open: bool
    incident_started_ms: int | None
    warming_up: bool


class _Pred(NamedTuple):
    expected: float
    std: float
    season: float  # profile value used at ts (0 when the profile is not engaged)
    steps: float  # time since the last point, in typical intervals (>= 1)
    warming: bool


def new_state() -> State:
    """The state of a series that has seen no point."""
    return {
        "v": VERSION, "n": 0, "t0": None, "t": None, "dt": 0.0,  # count, first/last ts, typical interval
        "lvl": 0.0, "var": 0.0, "lvl_s": 0.0, "var_s": 0.0, "seas": False, "prof": [], "cnt": [],  # models
        "tail": 1.0, "zb": 0.0, "zv": 0.0, "zn": 0,  # tail factor; sustained-deviation test
        "inc": False, "inc_t": None, "calm": 0, "shifted": False, "refr": 0,  # incident state machine
        "run": 0, "run_x": 0.0, "run_s": 0.0,  # current run beyond shift_z (signed length, sums)
    }  # fmt: skip


def _alpha(half_life: float, n: int = 1 << 62, steps: float = 1.0) -> float:
    """EW weight of a new point: from a half-life in points, at least 1/(n+1) (a running mean at first)."""
    return max(1.0 / (n + 1), 1.0 - math.exp2(-min(steps, half_life) / half_life))


@lru_cache(maxsize=8)
def _normal_abs_quantile(p: float) -> float:
    return NormalDist().inv_cdf((1.0 + p) / 2.0)


def _bins(ts_ms: int, nbins: int) -> tuple[int, int, float]:
    """The two time-of-day bins around ts and the weight of the second (linear interpolation)."""
    pos = (ts_ms % DAY_MS) / (DAY_MS / nbins) - 0.5
    lo = math.floor(pos)
    return lo % nbins, (lo + 1) % nbins, pos - lo


def _season(state: State, ts_ms: int) -> float:
    prof = state["prof"]
    if not prof:
        return 0.0
    b0, b1, w = _bins(ts_ms, len(prof))
    return float(prof[b0] * (1.0 - w) + prof[b1] * w)


def _steps(state: State, ts_ms: int) -> float:
    if state["t"] is None or state["dt"] <= 0:
        return 1.0
    steps: float = (ts_ms - state["t"]) / state["dt"]
    return max(1.0, steps)


def _std(var: float, state: State, p: DetectorParams) -> float:
    level: float = state["lvl"]
    floor = max(p.rel_std_floor * abs(level), p.min_abs_deviation / p.z_threshold, 1e-9)
    return max(math.sqrt(max(var, 0.0)), floor) * max(1.0, float(state["tail"]))


def _gap_widen(steps: float, p: DetectorParams) -> float:
    return min(p.gap_std_max, math.sqrt(steps / p.gap_factor)) if steps > p.gap_factor else 1.0


def _warming(state: State, ts_ms: int, p: DetectorParams) -> bool:
    t0 = state["t0"]
    return state["n"] < p.warmup_points or t0 is None or ts_ms - t0 < p.warmup_seconds * 1000


def _predict(state: State, ts_ms: int, p: DetectorParams) -> _Pred:
    steps = _steps(state, ts_ms)
    if state["seas"]:
        season = _season(state, ts_ms)
        expected, std = state["lvl_s"] + season, _std(state["var_s"], state, p)
    else:
        season, expected, std = 0.0, state["lvl"], _std(state["var"], state, p)
    return _Pred(expected, std * _gap_widen(steps, p), season, steps, _warming(state, ts_ms, p))


def _can_open(state: State, pred: _Pred) -> bool:
    return not pred.warming and not state["inc"] and state["refr"] == 0


def _sustain_z(zb: float, zv: float, p: DetectorParams) -> float:
    """Smallest z whose (clipped) step lifts the EW mean of z past its alert level; inf if none."""
    if p.sustain_half_life_points <= 0:
        return math.inf
    a = _alpha(p.sustain_half_life_points)
    need = (max(p.sustain_min, p.sustain_z * math.sqrt(zv)) - (1.0 - a) * zb) / a
    return need if need < p.clip_z else math.inf


def _limits(state: State, pred: _Pred, p: DetectorParams) -> tuple[float, float]:
    """Values outside (lower, upper) are anomalous: a spike beyond z_threshold or a sustained deviation."""
    z_up = min(p.z_threshold, _sustain_z(state["zb"], state["zv"], p))
    z_down = min(p.z_threshold, _sustain_z(-state["zb"], state["zv"], p))
    up, down = max(z_up * pred.std, p.min_abs_deviation), max(z_down * pred.std, p.min_abs_deviation)
    return pred.expected - down, pred.expected + up


def bounds(state: State, ts_ms: int, params: DetectorParams) -> tuple[float, float]:
    """(expected, upper alert bound) at ts_ms; a value above it makes ``update(state, ts_ms, ...)`` alert.

    Pass the time stamp the closed bucket will be given to ``update``. The bound is ``inf`` while no new
    alert is possible (warm-up, open incident, refractory period), so an early alert on a partial bucket
    never fires where the closed bucket would not.
    """
    pred = _predict(state, ts_ms, params)
    upper = _limits(state, pred, params)[1] if _can_open(state, pred) else math.inf
    return pred.expected, upper


def _score(x: float, lower: float, upper: float, std: float, p: DetectorParams) -> float:
    """Normal CDF of the distance beyond the alert bound, in std: 0.5 on the bound."""
    beyond = (x - upper) / std if p.direction == "up" else max(x - upper, lower - x) / std
    return min(1.0, max(0.0, 0.5 * math.erfc(-beyond / math.sqrt(2.0))))


def _ew(level: float, var: float, r: float, a: float, av: float) -> tuple[float, float]:
    """One EW step of (level, prediction-error variance) with the (clipped) residual r."""
    return level + a * r, var + av * (r * r - var)


def _clip(r: float, std: float, clip: bool, p: DetectorParams) -> float:
    return max(-p.clip_z * std, min(p.clip_z * std, r)) if clip else r


def _learn_profile(s: State, ts_ms: int, x: float, half_life_days: float) -> None:
    """Move the two time-of-day bins around ts towards x (weighted running mean, then EW)."""
    per_day = DAY_MS / s["dt"] if s["dt"] > 0 else 0.0
    if per_day < 12:
        return
    if not s["prof"]:  # 3 points a bin a day: 15-minute bins for 5-minute data, 24 to 96 bins
        nbins = int(min(96, max(24, per_day // 3)))
        s["prof"], s["cnt"] = [0.0] * nbins, [0.0] * nbins
    b0, b1, w = _bins(ts_ms, len(s["prof"]))
    ew = 1.0 - math.exp2(-len(s["prof"]) / (per_day * half_life_days))
    for b, wb in ((b0, 1.0 - w), (b1, w)):
        if wb > 0:
            s["prof"][b] += max(wb / (s["cnt"][b] + wb), wb * ew) * (x - s["prof"][b])
            s["cnt"][b] += wb


def _engage(s: State, ts_ms: int, p: DetectorParams) -> bool:
    """Should the profile take over? Once on it stays on: it keeps learning, so a fading pattern flattens."""
    if s["t0"] is None or ts_ms - s["t0"] < p.season_min_days * DAY_MS or s["dt"] * 12 > DAY_MS:
        return False
    ratio: float = s["var_s"] / max(s["var"], 1e-300)
    return ratio < p.season_gain


def _incident(s: State, hit: bool, zd: float, can_open: bool, ts_ms: int, p: DetectorParams) -> bool:
    """Advance the incident state machine; True when this point opens a new incident."""
    if hit and can_open:
        s.update(inc=True, inc_t=ts_ms, calm=0)
        return True
    if s["inc"]:
        s["calm"] = s["calm"] + 1 if zd < p.close_z else 0
        if s["calm"] >= (p.settle_points if s["shifted"] else p.calm_points):
            s.update(inc=False, inc_t=None, calm=0, shifted=False, refr=p.refractory_points)
    elif s["refr"] > 0:
        s["refr"] -= 1
    return False


def _track_run(s: State, z: float, x: float, season: float, p: DetectorParams) -> None:
    """Count consecutive same-side points beyond shift_z; a long enough run re-bases the levels."""
    if abs(z) <= p.shift_z:
        s.update(run=0, run_x=0.0, run_s=0.0)
        return
    sign = 1 if z > 0 else -1
    if s["run"] * sign > 0:
        s.update(run=s["run"] + sign, run_x=s["run_x"] + x, run_s=s["run_s"] + x - season)
    else:
        s.update(run=sign, run_x=x, run_s=x - season)
    if abs(s["run"]) >= p.shift_points:
        k = abs(s["run"])
        s["lvl"], s["lvl_s"] = s["run_x"] / k, s["run_s"] / k
        s.update(run=0, run_x=0.0, run_s=0.0, shifted=s["inc"])


def _learn_tail(s: State, z0: float, p: DetectorParams) -> None:
    """Online tail_quantile of |z| (before the tail factor) over its normal value, kept in [0.8, 5]."""
    u = z0 / _normal_abs_quantile(p.tail_quantile)
    step = p.tail_rate * (p.tail_quantile if u > s["tail"] else p.tail_quantile - 1.0)
    s["tail"] = min(5.0, max(0.8, s["tail"] * math.exp(step)))


def _learn_sustain(s: State, z: float, quiet: bool, p: DetectorParams) -> None:
    """EW mean of z clipped at clip_z; outside incidents, a slow EW mean of its square clipped at 4x."""
    if p.sustain_half_life_points > 0:
        s["zb"] += _alpha(p.sustain_half_life_points) * (max(-p.clip_z, min(p.clip_z, z)) - s["zb"])
        if quiet:
            zb2 = min(s["zb"] ** 2, 4.0 * s["zv"]) if s["zn"] > 30 else s["zb"] ** 2
            s["zv"] += _alpha(4.0 * p.var_half_life_points, s["zn"]) * (zb2 - s["zv"])
            s["zn"] += 1


def update(state: State, ts_ms: int, value: float, params: DetectorParams) -> tuple[State, Verdict]:
    """Score ``value`` at ``ts_ms`` against ``state`` and learn from it; returns (new state, verdict).

    Raises ValueError for a non-finite value (callers skip those); finite values beyond +-1e100 are clamped.
    """
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value!r}")
    p, x = params, max(-MAX_ABS, min(MAX_ABS, float(value)))
    pred = _predict(state, ts_ms, p)
    s = {**state, "prof": list(state["prof"]), "cnt": list(state["cnt"])}
    r = x - pred.expected
    z = r / pred.std
    zd = z if p.direction == "up" else abs(z)
    lower, upper = _limits(state, pred, p)
    hit = x > upper or (p.direction == "both" and x < lower)
    was_open = s["inc"]
    opened = _incident(s, hit, zd, _can_open(state, pred), ts_ms, p)
    _learn(s, state, ts_ms, x, pred, p)
    if not pred.warming:
        _track_run(s, z, x, _season(state, ts_ms), p)
        if not was_open and p.tail_rate > 0:
            _learn_tail(s, abs(z) * _gap_widen(pred.steps, p) * max(1.0, state["tail"]), p)
        _learn_sustain(s, z, not was_open and not opened, p)
    if not s["seas"] and _engage(s, ts_ms, p):  # another model: its tails are learned afresh
        s.update(seas=True, tail=1.0, zn=0)
    # a percentage of less than the smallest amount the outputs carry (0.0001) is no figure: for a
    # series expected at 1e-9 a $1,000 spike was 1e14 %, which no NUMBER(18, 4) column holds
    dev = r / pred.expected * 100.0 if abs(pred.expected) >= MIN_EXPECTED else None
    verdict = Verdict(
        expected=pred.expected, std=pred.std, z=z,
        score=0.0 if pred.warming else _score(x, lower, upper, pred.std, p),
        deviation_percent=dev, is_anomaly=opened, incident_open=s["inc"],
        incident_started_ms=s["inc_t"], warming_up=pred.warming,
    )  # fmt: skip
    return s, verdict


def _learn(s: State, old: State, ts_ms: int, x: float, pred: _Pred, p: DetectorParams) -> None:
    """Update both level/variance pairs, the daily profile, the clock and the typical interval."""
    n, steps, clip = old["n"], pred.steps, not pred.warming
    a, av = _alpha(p.half_life_points, n, steps), _alpha(p.var_half_life_points, n, steps)
    widen = _gap_widen(steps, p)
    season = _season(old, ts_ms)
    std_r, std_s = _std(old["var"], old, p) * widen, _std(old["var_s"], old, p) * widen
    s["lvl"], s["var"] = _ew(old["lvl"], old["var"], _clip(x - old["lvl"], std_r, clip, p), a, av)
    s["lvl_s"], s["var_s"] = _ew(
        old["lvl_s"], old["var_s"], _clip(x - season - old["lvl_s"], std_s, clip, p), a, av
    )
    if n == 0:
        s["lvl"], s["var"] = x, 0.0
    if old["t0"] is None or ts_ms - old["t0"] < DAY_MS:  # the profile has not seen a whole day yet
        s["var_s"] = s["var"]
    # once engaged, the profile learns from x clipped around the seasonal model's expectation
    exp_s = old["lvl_s"] + season
    _learn_profile(
        s, ts_ms, exp_s + _clip(x - exp_s, std_s, clip and old["seas"], p), p.season_half_life_days
    )
    if old["t"] is not None and ts_ms > old["t"]:
        dt = float(ts_ms - old["t"])
        s["dt"] = dt if old["dt"] <= 0 else old["dt"] * min(2.0, max(0.5, dt / old["dt"])) ** 0.05
    s["n"], s["t0"] = n + 1, ts_ms if old["t0"] is None else old["t0"]
    s["t"] = ts_ms if old["t"] is None else max(old["t"], ts_ms)
