"""JSON views: health, metrics and routed table lookups (``/finops/...``)."""

from __future__ import annotations

import logging
from typing import Any

from faust.web import Request, Response, View

from finops_app.context import Context

logger = logging.getLogger(__name__)


def health(ctx: Context) -> dict[str, Any]:
    app = ctx.app
    assigned = sorted(
        f"{tp.topic}[{tp.partition}]" for tp in (app.assignor.assigned_actives() if app.assignor else ())
    )
    recovery = getattr(app.tables, "recovery", None)
    recovery_done = bool(recovery is not None and recovery.completed.is_set())
    sink = ctx.extras.get("sink")
    sink_status = sink.status() if sink is not None and hasattr(sink, "status") else None
    ok = recovery_done and bool(assigned) and (sink_status is None or sink_status.get("connected", True))
    return {
        "status": "ok" if ok else "degraded",
        "broker_url": ctx.settings.broker_url,
        "partitions_assigned": assigned,
        "recovery_finished": recovery_done,
        "sink": sink_status,
        "deadletters": sum(ctx.metrics.counters.get("deadletters_total", {}).values()),
    }


def register(ctx: Context) -> None:
    app = ctx.app

    @app.page("/finops/health/")
    class Health(View):
        async def get(self, request: Request) -> Response:
            body = health(ctx)
            return self.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.text(ctx.metrics.render(), content_type="text/plain; version=0.0.4")

    for table in (ctx.tables.unit_state, ctx.tables.series_state, ctx.tables.resource_state):
        _lookup_view(ctx, table)


def _lookup_view(ctx: Context, table: Any) -> None:
    app = ctx.app

    @app.page(f"/finops/tables/{table.name}/{{key}}/")
    @app.table_route(table=table, match_info="key")
    async def lookup(web: Any, request: Request, key: str) -> Response:
        value = table.get(key)
        if value is None:
            return web.json({"table": table.name, "key": key, "found": False}, status=404)  # type: ignore[no-any-return]
        return web.json({"table": table.name, "key": key, "found": True, "value": value})  # type: ignore[no-any-return]
