"""Snowflake side of the worker: the sink service and the scheduled SQL jobs (leader only).

The sink (``sinks.service.SinkService``) runs beside the agents with its own consumer group and
commits offsets only after Snowflake accepted the rows. Snowflake TASKs do not run on fakesnow,
so the daily summary refresh and the SQL anomaly check run from a timer every
``FINOPS_SQL_JOBS_INTERVAL_SECONDS`` (the TASK definitions stay in ``sql/snowflake_only``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from finops_app.context import Context
from finops_app.errors import FinOpsError

logger = logging.getLogger(__name__)


def register(ctx: Context) -> None:
    app, settings, metrics = ctx.app, ctx.settings, ctx.metrics
    if settings.sink_enabled:
        from finops_app.sinks.service import sink_service_class

        base: Any = sink_service_class(settings)

        class Sink(base):  # type: ignore[misc,valid-type]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                ctx.extras["sink"] = self

        app.service(Sink)

    if settings.sink_enabled and settings.sql_jobs_interval_seconds > 0:

        @app.timer(settings.sql_jobs_interval_seconds, on_leader=True, name="snowflake_sql_jobs")
        async def snowflake_sql_jobs() -> None:
            """Refresh daily_cost_summary and run the SQL anomaly check (idempotent MERGEs)."""
            from finops_app.sinks.jobs import run_sql_jobs, with_connection

            try:
                counts = await asyncio.to_thread(with_connection, settings, run_sql_jobs, settings)
            except (FinOpsError, OSError) as exc:
                metrics.inc("sql_job_failures_total")
                logger.warning(
                    "scheduled Snowflake SQL jobs failed, next try in %ss: %s",
                    settings.sql_jobs_interval_seconds,
                    exc,
                )
                return
            metrics.inc("sql_job_runs_total")
            metrics.set("sql_anomalies_last_run", counts.get("sql_anomalies", 0))
            logger.info("Snowflake SQL jobs: %s", counts)
