-- 001: the schemas of the FinOps data model. Idempotent: every statement is IF NOT EXISTS.
--
--   finops_meta        migrations bookkeeping (schema_migrations, created by the migrator)
--   finops_staging     raw Kafka records as VARIANT, one table per topic, and the sink stage
--   finops_curated     typed, de-duplicated events (one row per event_id)
--   finops_aggregated  results of the stream (windows, anomalies, ROI ...) and SQL summaries
--   finops_reporting   views for dashboards and ad-hoc queries
--   finops_analysis    forecasting objects (procedures exist only on a real account)

CREATE SCHEMA IF NOT EXISTS finops_meta;
CREATE SCHEMA IF NOT EXISTS finops_staging;
CREATE SCHEMA IF NOT EXISTS finops_curated;
CREATE SCHEMA IF NOT EXISTS finops_aggregated;
CREATE SCHEMA IF NOT EXISTS finops_reporting;
CREATE SCHEMA IF NOT EXISTS finops_analysis;
