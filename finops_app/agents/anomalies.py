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


class ColdCache:
    """The decoded cold parts of the services this worker last read or wrote, by service.

    At live rates a service's cold part (kilobytes of detector state) changes only when a bucket is
    scored, yet every batch decoded it from the table, and freed it again: about a tenth of the
    worker's event loop at 4,500 events/s (py-spy, 2026-11-28). The hot part, read every batch
    anyway, carries the cold version (``cv``) it goes with; when the cached part has that version,
    it is the stored one, because every change to a cold part bumps its version
    (``costseries._touch``; tests/unit/test_series_split.py checks that nothing else changes it).

    The cached objects are the ones the batch's state mutates, so the agent drops the whole cache
    when a batch fails (a retry must start from the table), and on every rebalance (another worker
    may have written the key meanwhile). At most ``max_entries`` services, least recently used out.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self._parts: dict[str, dict[str, Any]] = {}
        self.hits = self.misses = 0

    def get(self, service: str, version: Any) -> dict[str, Any] | None:
        cold = self._parts.pop(service, None)
        if cold is None or cold.get("cv") != version:
            self.misses += 1
            return None
        self._parts[service] = cold  # most recently used last
        self.hits += 1
        return cold

    def put(self, service: str, cold: dict[str, Any]) -> None:
        self._parts.pop(service, None)
        self._parts[service] = cold
        while len(self._parts) > self.max_entries:
            del self._parts[next(iter(self._parts))]

    def clear(self, *_: Any, **__: Any) -> None:
        """Forget every part (usable as a Faust signal receiver)."""
        self._parts.clear()

    def __len__(self) -> int:
        return len(self._parts)


def load_service(table: Any, service: str) -> dict[str, Any]:
    """A service's series state from its hot and cold table values."""
    return load_for_update(table, service)[0]


def load_for_update(
    table: Any, service: str, cache: ColdCache | None = None
) -> tuple[dict[str, Any], int | None]:
    """``load_service`` and the version of the cold part as stored (None: none stored), for
    ``store_service``: a cold part upgraded on load (``costseries.join``) is then written again.
    With ``cache``, the cold part is read from the table only when the cache does not hold the
    version the hot part names."""
    hot = table.get(service)
    cold = None
    if cache is not None and hot is not None and "cv" in hot:
        cold = cache.get(service, hot["cv"])
    if cold is None:
        cold = table.get(cold_key(service))
        if cache is not None and cold is not None:
            cache.put(service, cold)
    return costseries.join(hot, cold), (cold.get("cv", 0) if cold is not None else None)


def store_service(
    table: Any,
    service: str,
    state: dict[str, Any],
    loaded_version: int | None,
    cache: ColdCache | None = None,
) -> None:
    """Write the hot part, and first the cold part if it changed since it was loaded."""
    if costseries.cold_version(state) != loaded_version:
        # before the hot part: a crash leaves it ahead, not behind
        cold = costseries.cold_part(state)
        table[cold_key(service)] = cold
        if cache is not None:
            cache.put(service, cold)
    table[service] = costseries.hot_part(state)


def register(ctx: Context, clock: Clock) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.series_state
    cfg = series_config(settings)
    cache = ctx.extras["cold_cache"] = ColdCache() if settings.anomaly_cold_cache else None
    if cache is not None:
        app.on_partitions_revoked.connect(cache.clear)
        app.on_partitions_assigned.connect(cache.clear)
    sources = SourceClock(settings.idle_timeout_seconds)
    app.on_partitions_revoked.connect(sources.forget)
    app.on_partitions_assigned.connect(sources.forget)
    out_topic = topics.anomalies.get_topic_name()

    async def emit(records: list[dict[str, Any]], sent: list[Any]) -> None:
        for rec in records:
            sent.append(await ctx.send(topics.anomalies, rec["service"], orjson.dumps(rec)))
            metrics.inc("events_out_total", labels={"topic": out_topic})
            metrics.inc("anomalies_total", labels={"status": rec["status"], "severity": rec["severity"]})
            if rec["status"] == "open" and rec["detection_latency_ms"]:
                metrics.observe("detection_latency_ms", rec["detection_latency_ms"])

    async def process(partition: int, events: list[Any]) -> None:
        try:
            await process_batch(partition, events)
        except BaseException:
            if cache is not None:
                cache.clear()  # its parts may hold this batch's changes: a retry reads the table
            raise

    async def process_batch(partition: int, events: list[Any]) -> None:
        pkey = partition_key(partition)
        prec = table.get(pkey) or {"wm": 0, "due": {}}
        wm_before = wm = prec["wm"]
        states: dict[str, dict[str, Any]] = {}
        loaded: dict[str, int | None] = {}  # service -> cold version as loaded

        def state_of(service: str) -> dict[str, Any]:
            st = states.get(service)
            if st is None:
                st, loaded[service] = load_for_update(table, service, cache)
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
                    # applied before: their event times still move the source (see units.py)
                    sources.observe_source(prec, partition, src_id, max(i[2]["ts_ms"] for i in group))
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
            store_service(table, service, st, loaded[service], cache)
        if wm != wm_before or states or events:
            prec["wm"] = wm
            table[pkey] = prec
        latest = max((prec.get("src") or {}).values(), default=wm) if states else None
        clock.observe(topics.by_service.get_topic_name(), partition, wm, latest)

    @app.agent(topics.by_service, name="cost_anomalies")
    async def cost_anomalies(stream: Any) -> None:
        """EWMA anomaly detection per service, (service, unit) and (service, region)."""
        await run_batches(stream, ctx, "cost_anomalies", process)
