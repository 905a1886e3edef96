"""The FinOpsError tree: every error the app raises on purpose.

::

    FinOpsError
    ├── ConfigError (ValueError)          a setting is missing or malformed; says which and how
    ├── ValidationError (ValueError)      an input record is invalid; carries the field and reason
    │   └── TooLargeError                 a message over FINOPS_MAX_MESSAGE_BYTES
    ├── SourceError (RuntimeError)        a cost/utilisation source failed after its retries
    ├── SinkError (RuntimeError)          Snowflake refused or could not be reached
    │   └── RejectedRowError              one row Snowflake will never accept (dead-letter it)
    └── StackError (RuntimeError)         the local stack cannot start (port taken, Java missing)

Agents catch ``FinOpsError`` per event and dead-letter it; anything else is a bug and surfaces.
"""

from __future__ import annotations


class FinOpsError(Exception):
    """Base of every error raised on purpose by finops_app."""


class ConfigError(FinOpsError, ValueError):
    """A setting is missing or malformed."""


class ValidationError(FinOpsError, ValueError):
    """An input record failed validation at the boundary."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class TooLargeError(ValidationError):
    """A message larger than the configured maximum."""


class SourceError(FinOpsError, RuntimeError):
    """A source (Cost Explorer, CloudWatch, a file) failed after its retries."""


class SinkError(FinOpsError, RuntimeError):
    """Snowflake refused a load or could not be reached."""


class RejectedRowError(SinkError):
    """A row that Snowflake will never accept; it belongs on the dead-letter topic."""


class StackError(FinOpsError, RuntimeError):
    """The local development stack could not start."""
