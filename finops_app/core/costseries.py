"""Cost anomaly series of one service: bucket sums -> detector -> incidents -> CostAnomaly dicts.

A service's table value holds every series of that service: the service itself, each
(service, business unit) pair and, optionally, each (service, region) pair. Cost is summed per
event-time bucket (``anomaly_bucket_seconds``); a bucket whose running sum already exceeds the
detector's upper bound opens an incident at once (early alert), and a closed bucket feeds the
EWMA detector (``core.detector``), which confirms, updates or closes the incident. One incident
produces one ``open`` record, ``updated`` records when it worsens, and one ``closed`` record;
every record names the dimensions that drove the excess.

Pure functions over JSON dicts: the agent loads the value, calls ``observe``/``advance`` and
stores it back.

**Hot and cold parts.** Every batch changes a series' open bucket sums, but its detector state
(a daily profile of up to 96 bins, twice, per series: kilobytes) changes only when a bucket is
scored or an incident moves. ``split`` cuts a service's state into the part every batch writes
(open buckets, drivers, source offsets) and the cold part, with a version ``cv`` that every cold
change bumps, so the agent writes the cold part (its own table key) only when it changed: the
changelog then carries bytes in proportion to what changed, not the whole state per batch. The
agent writes the cold part before the hot one (the same changelog partition, in order), so a
crash between the two leaves a cold part one step ahead, never behind: replayed events of a
bucket it already scored are skipped (``lb``), and ``advance`` drops such a bucket from the
stale hot part instead of scoring it twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from finops_app.core import detector
from finops_app.core.money import q4s
from finops_app.core.validate import iso

logger = logging.getLogger(__name__)

MAX_ZERO_FILL = 12  # empty buckets fed as zero cost before a gap counts as missing data
TOP_RESOURCES = 20  # resources tracked per bucket for the driver list
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SeriesConfig:
    bucket_ms: int
    lateness_ms: int
    min_amount: Decimal
    region_series: bool
    params: detector.DetectorParams


COLD_FIELDS = ("d", "lb", "inc", "bu", "re")  # per series: detector state, last scored bucket, incident


def new_service() -> dict[str, Any]:
    return {"s": {}, "dr": {}, "h": {}, "cv": 0}


def cold_version(state: dict[str, Any]) -> int:
    """Bumped by every change to the cold part (see ``split``)."""
    return int(state.get("cv", 0))


def _touch(state: dict[str, Any]) -> None:
    state["cv"] = cold_version(state) + 1


def hot_part(state: dict[str, Any]) -> dict[str, Any]:
    """What every batch writes: open buckets, drivers, source offsets, and the cold version."""
    series = {key: {f: v for f, v in ser.items() if f not in COLD_FIELDS} for key, ser in state["s"].items()}
    return {**{f: v for f, v in state.items() if f != "s"}, "s": series, "cv": cold_version(state)}


def cold_part(state: dict[str, Any]) -> dict[str, Any]:
    """Detector states and incidents of every series."""
    series = {key: {f: ser[f] for f in COLD_FIELDS if f in ser} for key, ser in state["s"].items()}
    return {"cv": cold_version(state), "s": series}


def split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hot, cold) parts of a service's state; ``join`` puts them back together."""
    return hot_part(state), cold_part(state)


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A state stored by an earlier release, in today's layout (in place; a no-op for today's).

    Before 2026-11-27 a series kept one open bucket, ``b`` (its start) and ``v`` (its running sum),
    instead of ``ob`` (every open bucket): a worker upgraded on such a changelog crashed its anomaly
    agent on the first event (KeyError 'ob'). The open bucket moves into ``ob``. A detector state
    missing fields this release needs is replaced by a new one (the series learns again).
    """
    for key, ser in state.get("s", {}).items():
        if "ob" not in ser:
            bucket, value = ser.pop("b", None), ser.pop("v", None)
            ser["ob"] = {str(bucket): str(value if value is not None else "0")} if bucket is not None else {}
        d = ser.get("d")
        if not isinstance(d, dict) or not d.keys() >= _DETECTOR_KEYS:
            # a detector state this release cannot read (fields added since): the series learns
            # again from its next buckets rather than crash the agent on every batch
            logger.warning("series %s: detector state from an earlier release; it learns again", key)
            ser["d"] = detector.new_state()
            ser["inc"] = None  # its open incident, if any, is dropped with the model that opened it
            _touch(state)  # the cold part is written again with the next batch
    return state


_DETECTOR_KEYS = frozenset(detector.new_state())


def join(hot: dict[str, Any] | None, cold: dict[str, Any] | None) -> dict[str, Any]:
    """A service's state from its stored parts (either may be missing; a value stored whole, from
    before the split, is its own hot part). The cold part's version wins: it is never behind."""
    if hot is None and cold is None:
        return new_service()
    if cold is None:
        return _upgrade(hot)  # type: ignore[arg-type]
    state = dict(hot) if hot is not None else {"dr": {}, "h": {}}
    hot_series = state.get("s") or {}
    series: dict[str, Any] = {}
    for key, cold_ser in cold["s"].items():
        ser = dict(hot_series.get(key, {}))
        ser.update(cold_ser)
        series[key] = ser
    state["s"] = series
    state["cv"] = cold["cv"]
    return _upgrade(state)


def severity(deviation_percent: float | None) -> str:
    if deviation_percent is None or deviation_percent > 100:
        return "CRITICAL"
    if deviation_percent > 50:
        return "HIGH"
    return "MEDIUM"


def series_keys(service: str, bu: str, region: str, cfg: SeriesConfig) -> list[tuple[str, str, str]]:
    """(series key, business unit, region) for every series an event of these dimensions belongs to."""
    keys = [(service, "*", "*"), (f"{service}|bu={bu}", bu, "*")]
    if cfg.region_series:
        keys.append((f"{service}|region={region}", "*", region))
    return keys


def _new_series(bu: str, region: str) -> dict[str, Any]:
    # ob: open buckets {start_ms: running sum}; lb: last bucket fed to the detector
    return {"d": detector.new_state(), "ob": {}, "lb": None, "inc": None, "bu": bu, "re": region}


def observe(
    state: dict[str, Any],
    event: dict[str, Any],
    produced_ms: int,
    cfg: SeriesConfig,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Add one validated cost event to its open buckets; returns early alerts (mutates ``state``)."""
    return observe_many(state, [(event, produced_ms)], cfg, now_ms)


def observe_many(
    state: dict[str, Any],
    events: list[tuple[dict[str, Any], int]],
    cfg: SeriesConfig,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Add validated cost events (with their produce times) of one service to their open buckets.

    Events are summed per (series, bucket) first and each touched bucket is then updated and
    checked once, so a batch costs one detector lookup per bucket, not one per event; an early
    alert fires when a bucket's running sum, at the end of the batch, exceeds the detector's upper
    bound. Buckets stay open until the partition's watermark passes them (``advance``), so events
    from several upstream partitions, read in any interleaving, all land in their bucket. Returns
    early alerts (mutates ``state``).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    # events with the same dimensions and bucket first (a resource reports many times a bucket)
    groups: dict[tuple[str, int, str, str, str], list[Any]] = {}
    bucket_ms = cfg.bucket_ms
    for event, produced_ms in events:
        ts = event["ts_ms"]
        dims = (
            event["service"],
            ts - ts % bucket_ms,
            event["business_unit"],
            event["region"],
            event["resource_id"],
        )
        amount = Decimal(event["cost_amount"])
        g = groups.get(dims)
        if g is None:
            groups[dims] = [amount, produced_ms]
        else:
            g[0] += amount
            g[1] = max(g[1], produced_ms)
    sums: dict[tuple[str, int], list[Any]] = {}  # (series, bucket) -> [sum, produced, bu, region, service]
    drv: dict[int, dict[tuple[str, str], Decimal]] = {}  # bucket -> (dimension, value) -> sum
    series = state["s"]
    for (service, bucket, bu, region, res), (amount, produced_ms) in groups.items():
        for key, kbu, kregion in series_keys(service, bu, region, cfg):
            acc = sums.get((key, bucket))
            if acc is None:
                sums[(key, bucket)] = [amount, produced_ms, kbu, kregion, service]
            else:
                acc[0] += amount
                acc[1] = max(acc[1], produced_ms)
        top = series.get(service)
        if top is not None and top["lb"] is not None and bucket <= top["lb"]:
            continue  # late for scoring: no drivers either
        per_dim = drv.setdefault(bucket, {})
        for dim_value in (("bu", bu), ("region", region), ("res", res)):
            per_dim[dim_value] = per_dim.get(dim_value, _ZERO) + amount
    if drv:
        dr = state.setdefault("dr", {})
        for bucket, sums_by_dim in drv.items():
            target = dr.setdefault(str(bucket), {"bu": {}, "region": {}, "res": {}})
            for (dim, value), amount in sums_by_dim.items():
                _track_driver(target[dim], dim, value, amount)
    out: list[dict[str, Any]] = []
    for (key, bucket), (amount, produced_ms, bu, region, service) in sums.items():
        ser = series.get(key)
        if ser is None:
            ser = series[key] = _new_series(bu, region)
            _touch(state)
        if ser["lb"] is not None and bucket <= ser["lb"]:
            continue  # a late event for a bucket already scored: windows count it, detection skips it
        key_b = str(bucket)
        value = Decimal(ser["ob"].get(key_b, "0")) + amount
        ser["ob"][key_b] = str(value)
        seen = ser.setdefault("ot", {})  # latest produce time per open bucket: detection latency
        seen[key_b] = max(seen.get(key_b, 0), produced_ms)
        if ser["inc"] is None:
            expected, upper = detector.bounds(ser["d"], bucket, cfg.params)
            if float(value) > upper and value - Decimal(str(expected)) >= cfg.min_amount:
                out.append(
                    _open(
                        state,
                        service,
                        key,
                        ser,
                        float(value),
                        expected,
                        0.0,
                        bucket,
                        cfg,
                        now_ms,
                        produced_ms,
                    )
                )
    return out


def advance(
    state: dict[str, Any], service: str, watermark: int, cfg: SeriesConfig, now_ms: int
) -> list[dict[str, Any]]:
    """Score, in time order, every open bucket the watermark has passed; returns anomaly records."""
    out: list[dict[str, Any]] = []
    for key, ser in state["s"].items():
        for key_b in sorted(ser["ob"], key=int):
            bucket = int(key_b)
            if bucket + cfg.bucket_ms + cfg.lateness_ms > watermark:
                break
            value = float(Decimal(ser["ob"].pop(key_b)))
            produced = (ser.get("ot") or {}).pop(key_b, None)
            if ser["lb"] is not None and bucket <= ser["lb"]:
                continue  # scored already (a cold part ahead of its hot part, after a crash)
            out.extend(_finalize(state, service, key, ser, bucket, value, cfg, now_ms, produced))
    top = state["s"].get(service)
    open_buckets = top["ob"] if top is not None else {}
    state["dr"] = {k: v for k, v in (state.get("dr") or {}).items() if k in open_buckets}
    return out


def next_due(state: dict[str, Any], cfg: SeriesConfig) -> int | None:
    due = [int(b) + cfg.bucket_ms + cfg.lateness_ms for s in state["s"].values() for b in s["ob"]]
    return min(due) if due else None


def _finalize(
    state: dict[str, Any],
    service: str,
    key: str,
    ser: dict[str, Any],
    bucket: int,
    value: float,
    cfg: SeriesConfig,
    now_ms: int,
    produced_ms: int | None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    _touch(state)
    if ser["lb"] is not None:
        gap = (bucket - ser["lb"]) // cfg.bucket_ms - 1
        for i in range(1, min(gap, MAX_ZERO_FILL) + 1):
            ser["d"], _ = detector.update(ser["d"], ser["lb"] + i * cfg.bucket_ms, 0.0, cfg.params)
    ser["d"], verdict = detector.update(ser["d"], bucket, value, cfg.params)
    ser["lb"] = bucket
    inc = ser["inc"]
    if inc is not None and bucket < inc["start"]:
        return out  # a bucket from before an early alert opened: it does not speak for that incident
    args = (state, service, key, ser)
    if inc is None and verdict.is_anomaly and value - verdict.expected >= float(cfg.min_amount):
        out.append(_open(*args, value, verdict.expected, verdict.score, bucket, cfg, now_ms, produced_ms))
    elif inc is not None and not verdict.incident_open:
        out.append(
            _record(*args, "closed", value, verdict.expected, verdict.score, bucket, cfg, now_ms, None)
        )
        ser["inc"] = None
    elif inc is not None and value > inc["peak"] * 1.25:
        inc["peak"] = value
        out.append(
            _record(*args, "updated", value, verdict.expected, verdict.score, bucket, cfg, now_ms, None)
        )
    return out


def _open(
    state: dict[str, Any],
    service: str,
    key: str,
    ser: dict[str, Any],
    value: float,
    expected: float,
    score: float,
    bucket: int,
    cfg: SeriesConfig,
    now_ms: int,
    produced_ms: int | None,
) -> dict[str, Any]:
    anomaly_id = hashlib.sha256(f"{key}|{bucket}".encode()).hexdigest()[:24]
    ser["inc"] = {"id": anomaly_id, "start": bucket, "rev": 0, "peak": value}
    return _record(
        state, service, key, ser, "open", value, expected, max(score, 0.5), bucket, cfg, now_ms, produced_ms
    )


def _record(
    state: dict[str, Any],
    service: str,
    key: str,
    ser: dict[str, Any],
    status: str,
    value: float,
    expected: float,
    score: float,
    bucket: int,
    cfg: SeriesConfig,
    now_ms: int,
    produced_ms: int | None,
) -> dict[str, Any]:
    inc = ser["inc"]
    inc["rev"] += 1
    _touch(state)
    deviation = (value - expected) / expected * 100 if expected > 1e-9 else None
    return {
        "anomaly_id": inc["id"],
        "anomaly_type": "cost_spike" if status != "closed" else "cost_spike_resolved",
        "status": status,
        "service": service,
        "business_unit": ser["bu"],
        "region": ser["re"],
        "series": key,
        "current_cost": q4s(Decimal(str(value))),
        "historical_average": q4s(Decimal(str(expected))),
        "deviation_percent": None if deviation is None else round(deviation, 2),
        "score": round(min(1.0, max(0.0, score)), 4),
        "severity": severity(deviation),
        "drivers": drivers(state, service, bucket, cfg),
        "window_start": iso(bucket),
        "window_end": iso(bucket + cfg.bucket_ms),
        "timestamp": iso(bucket),
        "first_seen": iso(inc["start"]),
        "detected_at": iso(now_ms),
        "detection_latency_ms": max(0, now_ms - produced_ms) if produced_ms else 0,
        "revision": inc["rev"],
    }


def _track_driver(bucket: dict[str, str], dim: str, value: str, amount: Decimal) -> None:
    if dim == "res" and value not in bucket and len(bucket) >= TOP_RESOURCES:
        smallest = min(bucket, key=lambda k: Decimal(bucket[k]))
        if Decimal(bucket[smallest]) >= amount:
            return
        del bucket[smallest]
    bucket[value] = str(Decimal(bucket.get(value, "0")) + amount)


def drivers(state: dict[str, Any], service: str, bucket: int, cfg: SeriesConfig) -> list[dict[str, Any]]:
    """Which business unit, region and resources contributed most to the excess (top 3 each)."""
    dr = (state.get("dr") or {}).get(str(bucket)) or {}
    out: list[dict[str, Any]] = []
    names = {"bu": "business_unit", "region": "region", "res": "resource_id"}
    for dim in ("bu", "region", "res"):
        rows = []
        for value, observed_s in (dr.get(dim) or {}).items():
            observed = float(Decimal(observed_s))
            expected = 0.0
            if dim != "res":
                sub = state["s"].get(f"{service}|{'bu' if dim == 'bu' else 'region'}={value}")
                if sub is not None:
                    expected, _ = detector.bounds(sub["d"], bucket, cfg.params)
            rows.append(
                {
                    "dimension": names[dim],
                    "value": value,
                    "observed": round(observed, 4),
                    "expected": round(expected, 4),
                    "excess": round(observed - expected, 4),
                }
            )
        rows.sort(key=lambda r: r["excess"], reverse=True)
        out.extend(rows[:3])
    return out
