"""Cost anomalies per service: finops.stream.by-service -> finops.cost.anomalies (key service).

Thin wiring of ``core.costseries``: the service's value in ``series_state`` holds the EWMA state
of all its series; every cost event updates it (not only large ones), and buckets of quiet
series close when the partition's watermark (advanced by ticks when idle) passes them.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson

from finops_app.agents.common import SourceClock, delivered, fresh_items, groups, run_batches
from finops_app.agents.ticks import Clock
from finops_app.context import Context
from finops_app.core import costseries, detector
from finops_app.tables.state import decode_key, partition_key


def series_config(settings: Any) -> costseries.SeriesConfig:
    return costseries.SeriesConfig(
        bucket_ms=settings.anomaly_bucket_seconds * 1000,
        lateness_ms=settings.allowed_lateness_seconds * 1000,
        min_amount=Decimal(settings.anomaly_min_amount),
        region_series=settings.anomaly_region_series,
        params=detector.DetectorParams(
            direction="up",
            min_abs_deviation=float(settings.anomaly_min_amount),
            z_threshold=settings.anomaly_z_threshold,
            half_life_points=settings.anomaly_half_life_points,
            var_half_life_points=4 * settings.anomaly_half_life_points,
            warmup_points=settings.anomaly_warmup_points,
        ),
    )


def cold_key(service: str) -> str:
    """Table key of the cold part of a service's series state (``costseries.split``)."""
    return f"\x00cold/{service}"


def load_service(table: Any, service: str) -> dict[str, Any]:
    """A service's series state from its hot and cold table values."""
    return load_for_update(table, service)[0]


def load_for_update(table: Any, service: str) -> tuple[dict[str, Any], int | None]:
    """``load_service`` and the version of the cold part as stored (None: none stored), for
    ``store_service``: a cold part upgraded on load (``costseries.join``) is then written again."""
    cold = table.get(cold_key(service))
    return costseries.join(table.get(service), cold), (cold.get("cv", 0) if cold is not None else None)


def store_service(table: Any, service: str, state: dict[str, Any], loaded_version: int | None) -> None:
    """Write the hot part, and first the cold part if it changed since it was loaded."""
    if costseries.cold_version(state) != loaded_version:
        # before the hot part: a crash leaves it ahead, not behind
        table[cold_key(service)] = costseries.cold_part(state)
    table[service] = costseries.hot_part(state)


def register(ctx: Context, clock: Clock) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.series_state
    cfg = series_config(settings)
    sources = SourceClock(settings.idle_timeout_seconds)
    recent: list[dict[str, Any]] = ctx.extras.setdefault("recent_anomalies", [])
    out_topic = topics.anomalies.get_topic_name()

    async def emit(records: list[dict[str, Any]], sent: list[Any]) -> None:
        for rec in records:
            sent.append(await ctx.send(topics.anomalies, rec["service"], orjson.dumps(rec)))
            metrics.inc("events_out_total", labels={"topic": out_topic})
            metrics.inc("anomalies_total", labels={"status": rec["status"], "severity": rec["severity"]})
            if rec["status"] == "open" and rec["detection_latency_ms"]:
                metrics.observe("detection_latency_ms", rec["detection_latency_ms"])
            recent.append(rec)
        del recent[:-500]

    async def process(partition: int, events: list[Any]) -> None:
        pkey = partition_key(partition)
        prec = table.get(pkey) or {"wm": 0, "due": {}}
        wm_before = wm = prec["wm"]
        states: dict[str, dict[str, Any]] = {}
        loaded: dict[str, int | None] = {}  # service -> cold version as loaded

        def state_of(service: str) -> dict[str, Any]:
            st = states.get(service)
            if st is None:
                st, loaded[service] = load_for_update(table, service)
                states[service] = st
            return st

        now_ms = int(time.time() * 1000)
        sent: list[Any] = []  # delivery futures of this batch's anomaly records
        batch: dict[str, list[tuple[dict[str, Any], int]]] = {}  # service -> new events
        for event in events:
            env = orjson.loads(event.value)
            if env["k"] == "tick":
                wm = max(wm, env["wm"])
                continue
            key = None if "g" in env else decode_key(event.message.key)
            for _, src, spart, service, group in groups(env, key):
                st = state_of(service)
                src_id = f"{src}{spart}"
                items, repeats = fresh_items(st, src_id, group)
                if repeats:
                    metrics.inc("duplicates_skipped_total", repeats, labels={"agent": "cost_anomalies"})
                if items:
                    batch.setdefault(service, []).extend((body, produced) for _, produced, body in items)
                    sources.observe_source(prec, partition, src_id, max(b["ts_ms"] for _, _, b in items))
        for service, observed in batch.items():  # one update per service and batch
            metrics.inc("events_applied_total", len(observed), labels={"agent": "cost_anomalies"})
            await emit(costseries.observe_many(states[service], observed, cfg, now_ms), sent)
        wm = sources.watermark(prec, partition, wm)
        for service in set(states) | {s for s, at in prec["due"].items() if at <= wm}:
            st = state_of(service)
            await emit(costseries.advance(st, service, wm, cfg, now_ms), sent)
            due = costseries.next_due(st, cfg)
            if due is None:
                prec["due"].pop(service, None)
            else:
                prec["due"][service] = due
        # the anomaly records first: the state written next says they were sent (common.delivered)
        await delivered(sent)
        for service, st in states.items():
            store_service(table, service, st, loaded[service])
        if wm != wm_before or states or events:
            prec["wm"] = wm
            table[pkey] = prec
        latest = max((prec.get("src") or {}).values(), default=wm) if states else None
        clock.observe(topics.by_service.get_topic_name(), partition, wm, latest)

    @app.agent(topics.by_service, name="cost_anomalies")
    async def cost_anomalies(stream: Any) -> None:
        """EWMA anomaly detection per service, (service, unit) and (service, region)."""
        await run_batches(stream, ctx, "cost_anomalies", process)
