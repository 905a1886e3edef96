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
