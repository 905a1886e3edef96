"""The Faust application: ``create_app(settings)`` wires topics, tables, agents, views, commands.

``finops`` (the console script) is this app's own Faust CLI: ``finops worker``, ``finops agents``,
``finops tables``, ``finops send`` and the project's commands (``finops --help`` lists them).
"""

from __future__ import annotations

import logging
import sys

import faust

from finops_app import faust_fetch, faust_fixes, faust_restore, faust_seek, gc_tuning, kafka, topics
from finops_app.config import Settings, faust_env_overrides
from finops_app.context import Context
from finops_app.core.validate import Limits
from finops_app.metrics import Metrics
from finops_app.tables.declare import declare as declare_tables

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the app for ``settings``; nothing connects until a worker or command starts it."""
    faust_fixes.install(settings.faust_fast_delivery)
    faust_seek.install()  # always: records were lost on failover without it (faust_seek.py)
    faust_restore.install()  # bulk changelog restore; off per worker with FINOPS_RESTORE_BULK_SECONDS=0
    faust_fetch.install()  # the worker consumer's fetch wait: FINOPS_BATCH_WITHIN_SECONDS, not 1.5 s
    overriding = faust_env_overrides()
    if overriding:
        logger.warning("Faust environment variables %s override FINOPS_ settings", ", ".join(overriding))
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url,
        broker_credentials=kafka.faust_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_ms / 1000,
        stream_buffer_maxsize=8192,
        # The group leader assigns only topics in its metadata: topics created just before it joined
        # can be missing there, and then every member gets nothing until the next refresh
        # (aiokafka's default: 5 minutes). Refreshed every 10 s, a new topic is seen and assigned.
        consumer_metadata_max_age_ms=kafka.METADATA_MAX_AGE_MS,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        table_standby_replicas=1,
        autodiscover=False,
        origin="finops_app",
        loghandlers=[],
        Monitor=faust_fixes.LeanMonitor if settings.faust_fast_delivery else faust.sensors.Monitor,
    )
    ctx = Context(
        app=app,
        settings=settings,
        topics=topics.declare(app, settings),
        tables=declare_tables(app, settings.topic_partitions),
        metrics=Metrics(),
        limits=Limits.from_settings(settings),
    )
    app.finops = ctx  # type: ignore[attr-defined]
    gc_tuning.install(ctx.metrics, settings.gc_threshold)
    if settings.gc_freeze:

        @app.task  # type: ignore[untyped-decorator]
        async def freeze_gc() -> None:
            gc_tuning.freeze()

    _register(ctx)
    return app


def _register(ctx: Context) -> None:
    from finops_app import cli, cli_data, cli_snowflake, intake_process
    from finops_app.agents import anomalies, intake, ledger, pollers, recommendations, sql_jobs, ticks, units
    from finops_app.sources import http_events
    from finops_app.web import views

    clock = ticks.Clock()
    if ctx.settings.intake_process:
        intake_process.register(ctx)
    else:
        intake.register(ctx)
    units.register(ctx, clock)
    anomalies.register(ctx, clock)
    recommendations.register(ctx)
    ledger.register(ctx)
    pollers.register(ctx)
    sql_jobs.register(ctx)
    ticks.register(
        ctx,
        clock,
        {
            ctx.topics.by_unit.get_topic_name(): ctx.tables.unit_state,
            ctx.topics.by_service.get_topic_name(): ctx.tables.series_state,
        },
    )
    views.register(ctx)
    http_events.register(ctx)
    cli.register(ctx)
    cli_data.register(ctx)
    cli_snowflake.register(ctx)


app = create_app(Settings.from_env())


def main() -> None:
    """Console entry point: the app's Faust CLI (``finops worker``, ``finops agents`` ...)."""
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    if sys.argv[1:2] == ["worker"]:
        settings = app.finops.settings  # type: ignore[attr-defined]
        if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in sys.argv):
            level = {"warning": "warn", "critical": "crit"}.get(
                settings.log_level.lower(), settings.log_level
            )
            sys.argv += ["-l", level]  # FINOPS_LOG_LEVEL when the command line does not say
        _preflight(settings)
    app.main()


def _preflight(settings: Settings) -> None:
    """One connection to the broker before the worker starts: bad credentials or TLS files end
    the worker with one clear line (exit 2) instead of aiokafka's 'Unable to bootstrap' traceback.
    Then every topic of the app is created if missing: agents only declare what they consume, and
    the results are produced straight to topics that auto-creation (off) would not make."""
    import asyncio

    from finops_app.errors import ConfigError

    async def check() -> None:
        await kafka.check_connection(settings)
        await kafka.ensure_topics(settings)

    try:
        asyncio.run(check())
    except (ConfigError, ConnectionError) as exc:
        sys.stderr.write(f"finops worker: {exc}\n")
        sys.exit(2)
