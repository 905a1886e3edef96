"""The worker's Faust consumer waits at most the batch wait for a fetch; the producer settings reach it.

The latency this fixes is measured by bench/run (finops_app/faust_fetch.py).
"""

from __future__ import annotations

from finops_app import faust_fetch
from finops_app.app import create_app
from finops_app.config import Settings


async def test_the_worker_consumer_waits_for_fetch_min_bytes() -> None:
    app = create_app(Settings(fetch_min_bytes=65_536, batch_within_seconds=0.03, producer_linger_ms=20))
    assert faust_fetch.installed()
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # not started: no broker
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (65_536, 30)
    assert app.conf.producer_linger == 0.02


async def test_the_fetch_wait_is_the_batch_wait_not_fausts_1500_ms() -> None:
    app = create_app(Settings())
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (1, 50)
