"""gc_tuning: collections are counted into the metrics; the threshold setting takes effect."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from finops_app import gc_tuning
from finops_app.metrics import Metrics


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    for callback in gc_tuning._installed:
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
    gc_tuning._installed.clear()


def test_collections_are_counted_with_their_time(restore_gc: None) -> None:
    metrics = Metrics()
    gc_tuning.install(metrics, 0)
    gc.collect()
    assert metrics.counter("gc_collections_total", {"generation": "2"}) >= 1
    assert metrics.counter("gc_seconds_total", {"generation": "2"}) > 0
    assert "finops_gc_seconds_total" in metrics.render()


def test_threshold_and_a_second_install_replaces_the_first(restore_gc: None) -> None:
    first, second = Metrics(), Metrics()
    gc_tuning.install(first, 25_000)
    assert gc.get_threshold()[0] == 25_000
    gc_tuning.install(second, 0)  # 0 keeps what is set
    assert gc.get_threshold()[0] == 25_000
    before = first.counter("gc_collections_total", {"generation": "2"})
    gc.collect()
    assert first.counter("gc_collections_total", {"generation": "2"}) == before  # no longer counted
    assert second.counter("gc_collections_total", {"generation": "2"}) >= 1


def test_a_collection_inside_a_metrics_call_does_not_freeze_the_process() -> None:
    """A collection can start inside any allocation, also one made while the metrics lock is
    held. The callback took the lock again and the worker froze for good (seen in ``make demo``
    on 2026-11-28: py-spy showed ``Metrics.set`` -> GC -> ``on_gc`` -> ``Metrics.inc``). With a
    young-generation threshold of 1 every allocation collects, so the old callback hangs here at
    once; run in a subprocess so that a hang fails the test instead of the suite."""
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from finops_app import gc_tuning\n"
        "from finops_app.metrics import Metrics\n"
        "m = Metrics()\n"
        "gc_tuning.install(m, 0)\n"
        "gc.set_threshold(1)\n"
        "for i in range(2000):\n"
        "    m.set('g', i, {'k': str(i % 7)})\n"
        "    m.inc('c', 1, {'k': str(i % 7)})\n"
        "    m.observe('h', i, {'k': str(i % 7)})\n"
        "gc.set_threshold(700)\n"
        "assert m.counter('gc_collections_total', {'generation': '0'}) > 1000, m.render()\n"
        "print('ok')\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process froze: the GC callback waited for the metrics lock its own thread held")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
