"""Snowflake: connection, migrations, the bulk sink from Kafka, and the scheduled SQL jobs.

- ``connection``: Settings -> connection (password or key pair; the local fakesnow server by
  host/port); ``Connector`` re-opens after failures.
- ``migrate``: ``sql/NNN_*.sql`` applied once each, checksummed in finops_meta.schema_migrations.
- ``rows``: Kafka message -> (table, row) for every sink topic; the table definitions.
- ``loader``: rows -> Parquet -> PUT -> COPY INTO a landing table -> MERGE on the natural key.
- ``service``: the worker's sink (own consumer, batches per table, commits after Snowflake).
- ``jobs``: daily summary, SQL anomaly check, forecast queries.

Nothing is imported here: each module pulls its heavy dependencies when used.
"""
