"""intake_process: the child's reports (metric increments, gauges, status) merged by the worker."""

from __future__ import annotations

import orjson

from finops_app.intake_process import Reporter, apply_report
from finops_app.metrics import Metrics


def test_reports_carry_increments_once_and_merge_into_the_workers_metrics() -> None:
    child, worker = Metrics(), Metrics()
    worker.inc("deadletters_total", 2, labels={"topic": "t", "stage": "window"})  # the worker's own
    reporter = Reporter(child)
    child.inc("events_in_total", 5, labels={"topic": "cost"})
    child.inc("deadletters_total", labels={"topic": "t", "stage": "window"})
    child.inc("gc_seconds_total", 0.5, labels={"generation": "0"})  # stays in the child
    child.set("consumer_lag", 7, labels={"topic": "cost", "partition": "0"})
    status = apply_report(worker, reporter.report({"assigned": ["cost[0]"], "records": 5}))
    assert status == {"assigned": ["cost[0]"], "records": 5}
    child.inc("events_in_total", 3, labels={"topic": "cost"})
    line = reporter.report({"records": 8})
    assert orjson.loads(line)["c"] == [["events_in_total", [["topic", "cost"]], 3.0]]  # only the increment
    apply_report(worker, line)
    apply_report(worker, reporter.report({}))  # nothing new: nothing added
    assert worker.counter("events_in_total", {"topic": "cost"}) == 8
    assert worker.counter("deadletters_total", {"topic": "t", "stage": "window"}) == 3
    assert worker.gauges["consumer_lag"][(("partition", "0"), ("topic", "cost"))] == 7
    assert "gc_seconds_total" not in worker.counters
