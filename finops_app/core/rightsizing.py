"""Right-sizing: utilisation samples in, a bounded per-resource state and Recommendation dicts out.

The state is one small JSON dict per resource (a RocksDB table value, replicated through Kafka)::

    {"v": 1,
     "metrics": {"cpu": {"1736928000000": {"n": 12, "s": 3.1, "q": 0.9, "lo": 0.1, "hi": 0.5,
                                            "h": {"10": 3, "25": 9}}}},
     "last_ts_ms": 1736931599000, "eval_ms": 0, "emitted": {"day": "", "sig": []}}

``metrics`` holds, per metric (at most ``MAX_METRICS``), one bucket per UTC hour keyed by the hour's
start: sample count ``n``, sum ``s`` and sum of squares ``q`` (mean and coefficient of variation),
extremes ``lo``/``hi`` and a sparse histogram ``h`` of 1 %-wide bins. Buckets older than the
lookback behind the newest sample are dropped, so a resource costs O(lookback hours × 100 bins),
whatever its sample rate. p95 is the nearest-rank 95th percentile read from the merged histogram
as the upper edge of its bin, clamped to the observed [lo, hi]: never below the true value and at
most one bin (0.01) above it, which errs towards keeping capacity.

Decisions use the busiest metric (highest p95): a resource is only as idle as its bottleneck.
Nothing is recommended until at least ``MIN_COVERAGE_HOURS`` (24, or the whole lookback if that is
shorter) distinct hours of the lookback have samples: a quiet night is not an idle instance.

Functions return new dicts and never mutate their arguments; no Faust, no I/O.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from finops_app.core.money import q4s
from finops_app.core.prices import HOURS_PER_MONTH, PriceTable, family_of, size_factor
from finops_app.core.validate import iso

State = dict[str, Any]

HOUR_MS = 3_600_000
BINS = 100
MAX_METRICS = 4
MIN_COVERAGE_HOURS = 24
TARGET_P95 = 0.60  # the p95 projected onto the proposed size must stay at or under this
SPOT_MAX_CV = 0.30  # "steady": standard deviation at most 30 % of the mean
STORAGE_COLD_THRESHOLD = 0.10  # default; a settings object may carry storage_cold_threshold
EVAL_INTERVAL_MS = HOUR_MS
STORAGE_TYPES = {"bucket": ("s3", "STANDARD"), "volume": ("ebs", "gp3")}
PRODUCTION = frozenset({"production", "prod", "prd"})
_SPOT_KEYS = ("lifecycle", "instance_lifecycle", "purchase_option", "market")
_NS = uuid.UUID("6f1d3c2e-3b7a-5d8e-9a41-0c5b2f7e9d10")


class RecommendSettings(Protocol):
    """The part of :class:`~finops_app.config.Settings` that recommendations read."""

    @property
    def rightsize_p95_threshold(self) -> float: ...
    @property
    def idle_threshold(self) -> float: ...
    @property
    def utilisation_lookback_hours(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Stats:
    """Merged statistics of one metric over a set of hourly buckets."""

    metric: str
    samples: int
    p95: float
    lo: float
    hi: float
    mean: float
    cv: float


def new_state() -> State:
    return {"v": 1, "metrics": {}, "last_ts_ms": 0, "eval_ms": 0, "emitted": {"day": "", "sig": []}}


def _hour(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def _bin(u: float) -> int:
    return min(int(u * BINS), BINS - 1)


def observe(state: State | None, sample: Mapping[str, Any], *, lookback_hours: int = 72) -> State:
    """The state with one canonical utilisation sample (``parse_resource`` output) added."""
    base = state or new_state()
    ts = int(sample["ts_ms"])
    u = float(sample["utilisation"])
    u = min(max(u, 0.0), 1.0) if math.isfinite(u) else 0.0
    metric = str(sample.get("metric") or "cpu")
    newest = max(int(base.get("last_ts_ms", 0)), ts)
    horizon = _hour(newest) - lookback_hours * HOUR_MS
    metrics: dict[str, dict[str, Any]] = {}
    for name, buckets in base.get("metrics", {}).items():
        kept = {k: b for k, b in buckets.items() if int(k) >= horizon}
        if kept:
            metrics[name] = kept
    out = {**base, "metrics": metrics, "last_ts_ms": newest}
    hour = _hour(ts)
    if hour < horizon or (metric not in metrics and len(metrics) >= MAX_METRICS):
        return out  # older than the lookback, or one metric too many: nothing to add
    buckets = dict(metrics.get(metric, {}))
    old = buckets.get(str(hour)) or {"n": 0, "s": 0.0, "q": 0.0, "lo": u, "hi": u, "h": {}}
    b = str(_bin(u))
    buckets[str(hour)] = {
        "n": old["n"] + 1,
        "s": old["s"] + u,
        "q": old["q"] + u * u,
        "lo": min(old["lo"], u),
        "hi": max(old["hi"], u),
        "h": {**old["h"], b: old["h"].get(b, 0) + 1},
    }
    metrics[metric] = buckets
    return out


def _merge(metric: str, buckets: list[Mapping[str, Any]]) -> Stats | None:
    n = sum(int(b["n"]) for b in buckets)
    if n == 0:
        return None
    total = sum(float(b["s"]) for b in buckets)
    squares = sum(float(b["q"]) for b in buckets)
    lo = min(float(b["lo"]) for b in buckets)
    hi = max(float(b["hi"]) for b in buckets)
    hist: dict[int, int] = {}
    for b in buckets:
        for k, c in b["h"].items():
            hist[int(k)] = hist.get(int(k), 0) + int(c)
    rank, seen, p95 = (95 * n + 99) // 100, 0, hi
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            p95 = (k + 1) / BINS
            break
    mean = total / n
    std = math.sqrt(max(squares / n - mean * mean, 0.0))
    cv = std / mean if mean > 0 else 0.0
    return Stats(metric, n, min(max(p95, lo), hi), lo, hi, mean, cv)


def _in_window(hour_key: str, now_ms: int | None, lookback_hours: int | None) -> bool:
    """Whether the bucket of ``hour_key`` overlaps the lookback ending at ``now_ms`` (None: all)."""
    if now_ms is None or lookback_hours is None:
        return True
    return now_ms - lookback_hours * HOUR_MS < int(hour_key) + HOUR_MS and int(hour_key) <= now_ms


def _window(state: State, now_ms: int | None, lookback_hours: int | None) -> tuple[dict[str, Stats], int]:
    """Stats per metric over the lookback and the number of distinct hours with samples."""
    out, hours = {}, set()
    for metric, buckets in state.get("metrics", {}).items():
        keys = [k for k in buckets if _in_window(k, now_ms, lookback_hours)]
        hours.update(keys)
        stats = _merge(metric, [buckets[k] for k in keys])
        if stats is not None:
            out[metric] = stats
    return out, len(hours)


def p95(state: State, metric: str | None = None) -> float | None:
    """p95 of ``metric`` (default: the busiest metric) over the retained buckets; None if empty."""
    stats, _ = _window(state, None, None)
    if metric is not None:
        return stats[metric].p95 if metric in stats else None
    return max((s.p95 for s in stats.values()), default=None)


def _day(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%d")


def _dec(value: Any) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return d if d.is_finite() and d > 0 else Decimal(0)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every recommendation of one evaluation shares."""

    res: Mapping[str, Any]
    now_ms: int
    top: Stats
    evidence: dict[str, Any]

    def rec(self, kind: str, current: str, proposed: str, saving: Decimal, **extra: Any) -> dict[str, Any]:
        rid = str(self.res["resource_id"])
        return {
            "recommendation_id": str(uuid.uuid5(_NS, f"{rid}/{kind}/{_day(self.now_ms)}")),
            "resource_id": rid,
            "kind": kind,
            "business_unit": str(self.res.get("business_unit", "unallocated")),
            "service": str(self.res.get("service", "")),
            "region": str(self.res.get("region", "")),
            "current": current,
            "proposed": proposed,
            "monthly_saving": q4s(saving),
            "evidence": {**self.evidence, **extra},
            "timestamp": iso(self.now_ms),
        }


def recommend(
    state: State, resource: Mapping[str, Any], prices: PriceTable, settings: RecommendSettings, now_ms: int
) -> list[dict[str, Any]]:
    """Recommendation field dicts for one resource (``resource``: its latest canonical sample).

    ``stop_idle`` excludes ``rightsize`` and ``spot`` (stopping saves more than either);
    ``rightsize`` and ``spot`` may both appear and are alternatives, their savings do not add up.
    Every kind but ``stop_idle`` is dropped when its saving is not positive.
    """
    lookback = settings.utilisation_lookback_hours
    per_metric, hours = _window(state, now_ms, lookback)
    need = min(MIN_COVERAGE_HOURS, lookback)
    if not per_metric or hours < need:
        return []
    top = max(per_metric.values(), key=lambda s: s.p95)
    idle, rightsize = float(settings.idle_threshold), float(settings.rightsize_p95_threshold)
    itype = str(resource.get("instance_type") or "")
    rtype = str(resource.get("resource_type") or "instance")
    env = str(resource.get("environment") or "unknown").lower()
    limits = {"idle": idle, "rightsize_p95": rightsize, "target_p95": TARGET_P95, "spot_max_cv": SPOT_MAX_CV}
    stats = {"p95": top.p95, "max": top.hi, "min": top.lo, "mean": top.mean, "cv": top.cv}
    evidence = {"metric": top.metric, **{k: round(v, 4) for k, v in stats.items()}, "samples": top.samples}
    evidence |= {"hours_covered": hours, "min_hours": need, "lookback_hours": lookback, "thresholds": limits}
    evidence |= {"resource_type": rtype, "instance_type": itype, "environment": env}
    ctx = _Ctx(resource, now_ms, top, evidence)
    if rtype in STORAGE_TYPES:
        cold = float(getattr(settings, "storage_cold_threshold", STORAGE_COLD_THRESHOLD))
        return _storage(ctx, prices, cold, idle)
    table_price = prices.hourly(itype)
    hourly = table_price if table_price is not None else _dec(resource.get("hourly_cost"))
    source = prices.source if table_price is not None else "sample hourly_cost"
    money = {"hours_per_month": int(HOURS_PER_MONTH), "source": source, "current_hourly": str(hourly)}
    current = itype or rtype
    if top.p95 < idle:
        return [ctx.rec("stop_idle", current, "stopped", hourly * HOURS_PER_MONTH, prices=money)]
    out = []
    if top.p95 < rightsize and table_price is not None:
        out += _rightsize(ctx, prices, itype, table_price, money)
    already_spot = any(str((resource.get("metadata") or {}).get(k, "")).lower() == "spot" for k in _SPOT_KEYS)
    discount = prices.spot_discount.get(family_of(itype)) if itype else None
    steady = top.cv <= SPOT_MAX_CV
    non_production = env not in PRODUCTION | {"unknown", ""}
    spot_ok = resource.get("stateless") is True and non_production and steady and not already_spot
    if spot_ok and discount is not None and hourly > 0:
        spot = {**money, "spot_discount": str(discount), "proposed_hourly": str(hourly * (1 - discount))}
        saving = hourly * discount * HOURS_PER_MONTH
        out.append(ctx.rec("spot", current, f"{current} (spot)", saving, prices=spot))
    return out


def _rightsize(
    ctx: _Ctx, prices: PriceTable, itype: str, price: Decimal, money: dict[str, Any]
) -> list[dict[str, Any]]:
    """Go down the ladder while the projected p95 (scaled by size factors) stays <= TARGET_P95."""
    target, projected = "", ctx.top.p95
    for candidate in prices.smaller(itype):
        scaled = ctx.top.p95 * (size_factor(itype) or 1.0) / (size_factor(candidate) or 1.0)
        if scaled > TARGET_P95:
            break
        target, projected = candidate, scaled
    new = prices.hourly(target) if target else None
    if new is None or new >= price:
        return []
    saving = (price - new) * HOURS_PER_MONTH
    extra = {"projected_p95": round(projected, 4), "prices": {**money, "proposed_hourly": str(new)}}
    return [ctx.rec("rightsize", itype, target, saving, **extra)]


def _storage(ctx: _Ctx, prices: PriceTable, cold: float, idle: float) -> list[dict[str, Any]]:
    """One class down when p95 access < cold, the coldest class when it is < idle."""
    service, default_class = STORAGE_TYPES[str(ctx.res.get("resource_type"))]
    meta = ctx.res.get("metadata") or {}
    given = meta.get("storage_class") or meta.get("volume_type") or ctx.res.get("instance_type")
    current = str(given or default_class)
    cheaper = prices.cheaper_storage(service, current)
    cur_price = prices.storage_price(service, current)
    if ctx.top.p95 >= cold or not cheaper or cur_price is None:
        return []
    target = cheaper[-1] if ctx.top.p95 < idle else cheaper[0]
    new_price = prices.storage_price(service, target) or Decimal(0)
    size_gb = _dec(meta.get("size_gb"))
    if size_gb > 0:
        saving, basis = (cur_price - new_price) * size_gb, f"{size_gb} GB"
    else:
        saving = _dec(ctx.res.get("hourly_cost")) * HOURS_PER_MONTH * (1 - new_price / cur_price)
        basis = "hourly_cost"
    if saving <= 0:
        return []
    used = {"current_gb_month": str(cur_price), "proposed_gb_month": str(new_price), "basis": basis}
    used["source"] = prices.source
    extra = {"thresholds": {**ctx.evidence["thresholds"], "storage_cold": cold}, "prices": used}
    return [ctx.rec("storage_tier", current, target, saving, **extra)]


def should_reevaluate(state: State, now_ms: int) -> bool:
    """True when the resource has samples and was last evaluated ``EVAL_INTERVAL_MS`` or more ago."""
    has_data = any(state.get("metrics", {}).values())
    return has_data and now_ms - int(state.get("eval_ms", 0)) >= EVAL_INTERVAL_MS


def mark_evaluated(
    state: State, recommendations: list[dict[str, Any]], now_ms: int
) -> tuple[State, list[dict[str, Any]]]:
    """(new state, the recommendations to emit): each (kind, proposed) once per UTC day.

    A recommendation is emitted when the day changed since the last emission or when it differs
    from what was last emitted (a new kind or a new proposal). Its id is the same within a day,
    so a changed recommendation replaces the earlier one downstream (upsert on the id).
    """
    day = _day(now_ms)
    sigs = [f"{r['kind']}:{r['proposed']}" for r in recommendations]
    last = state.get("emitted") or {}
    same_day = set(last.get("sig", [])) if last.get("day") == day else set()
    fresh = [r for r, sig in zip(recommendations, sigs, strict=True) if sig not in same_day]
    return {**state, "eval_ms": now_ms, "emitted": {"day": day, "sig": sorted(sigs)}}, fresh
