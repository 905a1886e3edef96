"""finops_app: event-driven FinOps on Kafka (Faust) and Snowflake."""

__version__ = "0.1.0"
