"""The Faust worker's consumer (the agents' topics and the changelogs): bounded fetch waits.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``. aiokafka keeps one fetch
request in flight per broker, and leaves out of it the partitions whose records the app has not
taken yet; when every partition in the request is momentarily empty, the broker holds it for up to
1.5 s, and records arriving meanwhile on the left-out partitions wait for it. Under live traffic
that was most of the pipeline's latency: at a fixed 2,850 events/s (``bench/run --only latency
--latency-rate 2850``) anomaly latency p50 / p95 / p99 was 1,494 / 3,051 / 3,260 ms with Faust's
wait, and 206 / 474 / 924 ms with a 50 ms wait, the same hour.

``_create_worker_consumer`` (wraps Faust's) sets the fetch wait to ``FINOPS_BATCH_WITHIN_SECONDS``
(the longest wait to fill a batch, as the intake service's own consumer already uses) and the
minimum fetch size to ``FINOPS_FETCH_MIN_BYTES`` (default 1: answer as soon as there is a record).
"""

from __future__ import annotations

from typing import Any

from finops_app.faust_patch import wrap

_originals: dict[str, Any] = {}


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _originals["_create_worker_consumer"](self, transport)
    ctx = getattr(self.app, "finops", None)
    if ctx is not None:
        # read by AIOKafkaConsumer.start() when it builds its Fetcher
        consumer._fetch_min_bytes = ctx.settings.fetch_min_bytes
        consumer._fetch_max_wait_ms = max(1, int(ctx.settings.batch_within_seconds * 1000))
    return consumer


def install() -> None:
    """Wrap Faust's ``AIOKafkaConsumerThread._create_worker_consumer`` (idempotent)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    wrap(AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer, _originals)


def installed() -> bool:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    return AIOKafkaConsumerThread._create_worker_consumer is _create_worker_consumer
