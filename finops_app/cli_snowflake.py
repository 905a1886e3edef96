"""Snowflake commands: ``finops migrate``, ``finops forecast``, ``finops sql-anomalies``."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.cli import option

from finops_app.context import Context


def register(ctx: Context) -> None:
    app, conf = ctx.app, ctx.settings

    @app.command(
        option(
            "--include-snowflake-only",
            is_flag=True,
            default=False,
            help="Also apply sql/snowflake_only (TASKs and PROCEDUREs: real accounts only).",
        ),
    )
    async def migrate(self: Any, include_snowflake_only: bool) -> None:
        """Apply the numbered SQL files in sql/ that were not applied yet (safe to run twice)."""
        from finops_app.sinks.connection import describe
        from finops_app.sinks.migrate import run_migrations

        done = await asyncio.to_thread(run_migrations, conf, include_snowflake_only=include_snowflake_only)
        self.say(f"{describe(conf)}: applied {len(done)} file(s)" + (": " + ", ".join(done) if done else ""))

    @app.command(
        option("--business-unit", required=True, help="Business unit to forecast."),
        option("--days", default=30, show_default=True, help="Days ahead."),
        option("--history-days", default=90, show_default=True, help="Days of history fitted."),
    )
    async def forecast(self: Any, business_unit: str, days: int, history_days: int) -> None:
        """Forecast a unit's daily cost with a prediction interval from the residuals.

        A linear trend, or trend x day-of-week factors when three full weeks of history exist;
        the backtest error (MAPE over the last 7 days held out) is printed with the forecast.
        """
        from finops_app.sinks.jobs import run_forecast, with_connection

        try:
            result = await asyncio.to_thread(
                with_connection, conf, run_forecast, business_unit, days, history_days
            )
        except ValueError as exc:
            raise SystemExit(f"cannot forecast {business_unit!r}: {exc}") from None
        mape = "n/a (too little history)" if result.mape is None else f"{result.mape:.2f} %"
        self.say(
            f"model {result.model}, {result.n} days of history, backtest MAPE {mape}, "
            f"{result.confidence:.0%} prediction interval"
        )
        self.say(f"{'date':<12}{'predicted':>14}{'lower':>14}{'upper':>14}")
        for day, predicted, lower, upper in result.points:
            self.say(f"{day.isoformat():<12}{predicted:>14}{lower:>14}{upper:>14}")

    @app.command()
    async def sql_anomalies(self: Any) -> None:
        """Run the scheduled SQL jobs once: daily summary refresh and the hourly anomaly check."""
        from finops_app.sinks.jobs import run_sql_jobs, with_connection

        counts = await asyncio.to_thread(with_connection, conf, run_sql_jobs, conf)
        self.say(
            f"daily_cost_summary rows merged: {counts['daily_summary_rows']}; "
            f"new SQL anomalies: {counts['sql_anomalies']}"
        )
