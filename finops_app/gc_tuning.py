"""Python's cyclic garbage collector in a long-running worker: measured, and tuned when asked.

A worker allocates a few dozen objects per event (decoded JSON, Decimals, envelopes), so CPython
starts a young-generation collection every ~700 net allocations and, every so often, a full one
that walks every object the process holds (the Faust app, tables' caches, aiokafka buffers). The
time goes where the allocation happened (a profile shows it on ``orjson.loads`` lines).

``install`` always adds ``gc_collections_total`` and ``gc_seconds_total`` per generation to the
worker's metrics (so the cost is visible on /metrics; kept outside the metrics' lock and pulled
when they are read, since a collection can start while that lock is held), and with tuning on:

- ``gc.freeze()`` once the worker has started: everything alive then (modules, the app, its
  services) moves to a permanent generation that collections never walk again;
- a larger young-generation threshold (``FINOPS_GC_THRESHOLD``), so collections run less often
  and each one finds more garbage to free; memory held between collections grows by that many
  objects at most (a few MB).

Nothing here changes what is freed: reference counting frees almost everything as before, and
cycles are still collected, only in fewer, larger passes.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from finops_app.metrics import Metrics

logger = logging.getLogger(__name__)
_installed: list[Any] = []


def install(metrics: Metrics, threshold: int) -> None:
    """Count collections into ``metrics``; ``threshold`` > 0 sets the young-generation threshold."""
    for callback in _installed:  # a second app in the same process (tests) replaces the first
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
    _installed.clear()
    started: list[float] = [0.0]
    totals: dict[str, list[float]] = {}  # generation -> [collections, seconds]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        # no lock here: a collection can start inside any allocation, also one made while the
        # metrics lock is held, and taking it again froze the worker for good (2026-11-28, make demo)
        if phase == "start":
            started[0] = time.perf_counter()
            return
        total = totals.setdefault(str(info.get("generation", "?")), [0.0, 0.0])
        total[0] += 1
        total[1] += time.perf_counter() - started[0]

    def publish(into: Metrics) -> None:
        if on_gc not in _installed:
            return  # replaced by a later install
        for generation, (count, seconds) in list(totals.items()):
            labels = {"generation": generation}
            into.put_counter("gc_collections_total", count, labels)
            into.put_counter("gc_seconds_total", seconds, labels)

    gc.callbacks.append(on_gc)
    _installed.append(on_gc)
    metrics.add_collector(publish)
    if threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)


def freeze() -> None:
    """Move every object alive now to the permanent generation (call once the worker started)."""
    gc.collect()
    gc.freeze()
    logger.info("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
