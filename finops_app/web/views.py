"""HTTP requests in, JSON out: health, Prometheus metrics, result lists, KPIs and table lookups.

``register(ctx)`` is the one entry point ``create_app`` calls: it adds the results consumer
(``web.results``, started with the worker as an app service), every ``/finops/...`` view, the
``/metrics`` text and the dashboard (``web.dashboard``). List endpoints answer for the whole system
from the results consumer; ``/finops/tables/<table>/<key>/`` is routed to the worker owning the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from faust.web import Request, Response, View

from finops_app.agents.anomalies import load_service
from finops_app.agents.units import read_unit
from finops_app.context import Context
from finops_app.web import dashboard, queries
from finops_app.web.results import ResultsConsumer

logger = logging.getLogger(__name__)

MAX_LIMIT = 1000
STATUSES = ("open", "closed", "all")


class BadQuery(ValueError):
    """A query parameter that cannot be used; the message is shown to the client."""


def results(ctx: Context) -> ResultsConsumer | None:
    consumer = ctx.extras.get("results")
    return consumer if isinstance(consumer, ResultsConsumer) else None


def health(ctx: Context) -> dict[str, Any]:
    app = ctx.app
    assigned = sorted(
        f"{tp.topic}[{tp.partition}]" for tp in (app.assignor.assigned_actives() if app.assignor else ())
    )
    recovery = getattr(app.tables, "recovery", None)
    recovery_done = bool(recovery is not None and recovery.completed.is_set())
    sink = ctx.extras.get("sink")
    sink_status = sink.status() if sink is not None and hasattr(sink, "status") else None
    intake = ctx.extras.get("intake")  # input partitions, records, commits, rewinds, last error
    view = results(ctx)
    view_status = view.status() if view is not None else None
    reachable = view_status["broker_reachable"] if view_status else None
    intake_status = intake.status() if intake is not None else None
    failing = dict(ctx.extras.get("agent_failures") or {})  # agents retrying a batch (run_batches)
    ok = (
        recovery_done
        and not failing
        and reachable is not False
        # intake in its own process: ready once the child runs and reports (not while it restarts)
        and (intake_status is None or intake_status.get("ready", True))
        # the sink connects lazily: it is unhealthy once a load failed and it has not recovered, or
        # while one load hangs (the connector retries inside a request for up to its network timeout)
        and (
            sink_status is None
            or (
                (sink_status.get("connected") or not sink_status.get("last_error"))
                and sink_status.get("load_in_flight_seconds", 0.0) < ctx.settings.sink_stall_seconds
            )
        )
    )
    return {
        "status": "ok" if ok else "degraded",
        "broker_url": ctx.settings.broker_url,
        "broker_reachable": reachable,
        "partitions_assigned": assigned,
        "recovery_finished": recovery_done,
        "intake": intake_status,
        "agent_failures": failing,
        "sink": sink_status,
        "results_view": view_status,
        "results_consumer_lag": view_status["lag"] if view_status else None,
        "deadletters": sum(ctx.metrics.counters.get("deadletters_total", {}).values()),
    }


def consumer_lag(ctx: Context) -> None:
    """Set ``consumer_lag`` gauges for the worker's own assigned partitions (no network)."""
    consumer = getattr(ctx.app, "_consumer", None)  # do not create one where none runs
    if consumer is None or ctx.app.assignor is None:
        return
    read = getattr(consumer, "_read_offset", {})
    for tp in ctx.app.assignor.assigned_actives():
        highwater, offset = consumer.highwater(tp), read.get(tp)
        if highwater is not None and offset is not None:
            ctx.metrics.set(
                "consumer_lag",
                max(0, highwater - offset - 1),
                labels={"topic": tp.topic, "partition": str(tp.partition)},
            )


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _hours(request: Request, horizon_ms: int) -> float:
    raw = request.query.get("hours", "24")
    try:
        hours = float(raw)
    except ValueError:
        raise BadQuery("hours must be a number") from None
    if not 0 < hours <= horizon_ms / 3_600_000:
        raise BadQuery(f"hours must be above 0 and at most {horizon_ms // 3_600_000}")
    return hours


def list_views(ctx: Context) -> dict[str, Callable[[ResultsConsumer, Request], dict[str, Any]]]:
    """Path -> function of (results consumer, request) returning the JSON body."""
    settings = ctx.settings

    def anomalies(rv: ResultsConsumer, request: Request) -> dict[str, Any]:
        status = request.query.get("status", "open")
        if status not in STATUSES:
            raise BadQuery(f"status must be one of {', '.join(STATUSES)}")
        return queries.anomalies(rv.store, status, _limit(request))

    return {
        "/finops/anomalies/": anomalies,
        "/finops/windows/": lambda rv, rq: queries.windows(
            rv.store, rq.query.get("business_unit") or None, _hours(rq, rv.store.horizon_ms)
        ),
        "/finops/roi/": lambda rv, rq: queries.roi(
            rv.store, rq.query.get("business_unit") or None, _hours(rq, rv.store.horizon_ms)
        ),
        "/finops/recommendations/": lambda rv, rq: queries.recommendations(rv.store, _limit(rq)),
        "/finops/budgets/": lambda rv, rq: queries.budgets(rv.store, settings.budgets),
        "/finops/deadletters/": lambda rv, rq: queries.deadletters(
            rv.store, rv.deadletter_total(), _limit(rq, 50)
        ),
        "/finops/kpis/": lambda rv, rq: queries.kpis(
            rv.store, int(time.time() * 1000), rv.deadletter_total()
        ),
    }


SINK_GAUGES = ("rows_loaded", "batches_loaded", "batches_failed", "rows_rejected", "commits", "buffered_rows")


def sink_gauges(ctx: Context) -> None:
    """The Snowflake sink's counters as ``finops_sink_*`` series (read from its status)."""
    sink = ctx.extras.get("sink")
    if sink is None:
        return
    status = sink.status()
    for name in SINK_GAUGES:
        ctx.metrics.set(f"sink_{name}", float(status.get(name) or 0))
    ctx.metrics.set("sink_connected", 1.0 if status.get("connected") else 0.0)
    ctx.metrics.set("sink_load_in_flight_seconds", float(status.get("load_in_flight_seconds") or 0.0))


def register(ctx: Context) -> None:
    app = ctx.app
    _register_results(ctx)

    @app.page("/finops/health/")
    class Health(View):
        async def get(self, request: Request) -> Response:
            body = health(ctx)
            return self.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            consumer_lag(ctx)
            sink_gauges(ctx)
            return self.text(ctx.metrics.render(), content_type="text/plain; version=0.0.4")

    for path, fn in list_views(ctx).items():
        _list_view(ctx, path, fn)
    routes = (
        (ctx.tables.unit_state, ctx.topics.by_unit, read_unit),
        (ctx.tables.series_state, ctx.topics.by_service, _series_value),
        (ctx.tables.resource_state, ctx.topics.by_resource, None),
    )
    for table, topic, read in routes:
        _lookup_view(ctx, table, topic, read)
    dashboard.register(ctx)


def _register_results(ctx: Context) -> None:
    settings, metrics, app = ctx.settings, ctx.metrics, ctx.app

    class WorkerResults(ResultsConsumer):
        """The results consumer bound to this app; Faust instantiates it when the worker starts."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(settings, metrics, **kwargs)
            self.disabled = bool(app.client_only)  # commands that start the app need no view
            ctx.extras["results"] = self

    app.service(WorkerResults)


def _list_view(ctx: Context, path: str, fn: Callable[[ResultsConsumer, Request], dict[str, Any]]) -> None:
    @ctx.app.page(path, name=path.strip("/").replace("/", "-"))
    class ListView(View):
        async def get(self, request: Request) -> Response:
            rv = results(ctx)
            if rv is None:
                return self.json({"error": "the results view has not started yet"}, status=503)
            try:
                body = fn(rv, request)
            except BadQuery as exc:
                return self.json({"error": str(exc)}, status=400)
            body["results_view"] = {"caught_up": rv.caught_up(), "lag": rv.lag()}
            return self.json(body)


def _series_value(table: Any, key: str) -> Any:
    """A service's whole series state: its hot value joined with its cold part (agents/anomalies.py)."""
    if table.get(key) is None:
        return None
    return load_service(table, key)


def _lookup_view(ctx: Context, table: Any, topic: Any, read: Callable[[Any, str], Any] | None = None) -> None:
    """A key of ``table``, answered by the worker that owns it. Keys live in the partition of the
    re-keyed stream topic that feeds the table (raw key bytes), so requests are routed by that
    topic; ``table_route`` would hash the JSON-encoded key and pick the wrong worker. ``read``
    assembles a value stored under several keys."""
    app = ctx.app

    @app.page(f"/finops/tables/{table.name}/{{key}}/")
    @app.topic_route(topic=topic, match_info="key")
    async def lookup(web: Any, request: Request, key: str) -> Response:
        value = table.get(key) if read is None else read(table, key)
        if value is None:
            return web.json({"table": table.name, "key": key, "found": False}, status=404)  # type: ignore[no-any-return]
        return web.json({"table": table.name, "key": key, "found": True, "value": value})  # type: ignore[no-any-return]
