"""Settings: one frozen object read once from ``FINOPS_*`` environment variables.

Every field documents itself (``doc`` metadata); ``finops settings`` prints the table that the
README carries, and a unit test keeps the two in step. Secrets are :class:`Secret` values: their
``repr``/``str`` never show the value, so a settings object can be logged safely.

Only this module reads the environment (``Settings.from_env``); everything else receives a
``Settings``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_type_hints

from finops_app.errors import ConfigError

ENV_PREFIX = "FINOPS_"
# Faust reads these itself and lets them override the app's keyword arguments.
FAUST_ENV = (
    "BROKER_URL",
    "APP_STORE",
    "STORE",
    "WEB_PORT",
    "WEB_BIND",
    "WEB_HOST",
    "DATADIR",
    "APP_DATADIR",
    "PROCESSING_GUARANTEE",
    "TOPIC_PARTITIONS",
    "TOPIC_REPLICATION_FACTOR",
    "F_BROKER_URL",
    "WORKDIR",
)


def faust_env_overrides() -> list[str]:
    """Faust's own variables that are set here (they silently override the app's settings)."""
    return [name for name in FAUST_ENV if name in os.environ]


class Secret:
    """A string that does not print itself (passwords, keys, tokens)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value; call only where it is used, never to log it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


def _f(default: Any, doc: str, *, group: str = "core") -> Any:
    meta = {"doc": doc, "group": group}
    if isinstance(default, Mapping):
        frozen = dict(default)
        return field(default_factory=lambda: MappingProxyType(frozen), metadata=meta)
    return field(default=default, metadata=meta)


def _parse_mapping(raw: str, name: str) -> dict[str, Decimal]:
    """``unit=amount,unit=amount`` -> {unit: Decimal(amount)}."""
    out: dict[str, Decimal] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: expected key=value pairs, got {part!r}")
        try:
            out[key.strip()] = Decimal(value.strip())
        except InvalidOperation:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {value!r} is not a number") from None
    return out


@dataclass(frozen=True)
class Settings:
    """Every setting of the app. Build with ``Settings.from_env()`` or keyword arguments."""

    # -- core ------------------------------------------------------------------------------
    app_id: str = _f("finops", "Faust app id: the consumer group and the prefix of internal topics.")
    broker_url: str = _f(
        "kafka://127.0.0.1:9092",
        "Kafka bootstrap servers, `kafka://host:port[;host:port]` (a bare `host:port` works too).",
    )
    topic_prefix: str = _f("", "Prefix for every topic name (one cluster, several deployments or test runs).")
    data_dir: Path = _f(Path("var/worker"), "Directory for the worker's RocksDB tables; one per worker.")
    web_host: str = _f("127.0.0.1", "Interface the web server binds to.")
    web_port: int = _f(6066, "Port of the web server (JSON views, metrics, dashboard).")
    topic_partitions: int = _f(4, "Partitions for every topic the app creates (fix before first run).")
    topic_replication: int = _f(1, "Replication factor for topics the app creates (3 in production).")
    log_level: str = _f("info", "Log level of the worker (debug, info, warning, error).")
    # -- Kafka security ---------------------------------------------------------------------
    kafka_security_protocol: str = _f(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", group="kafka security"
    )
    kafka_ssl_cafile: str = _f("", "CA bundle that signed the broker certificate.", group="kafka security")
    kafka_ssl_certfile: str = _f("", "Client certificate (mutual TLS).", group="kafka security")
    kafka_ssl_keyfile: str = _f("", "Client private key (mutual TLS).", group="kafka security")
    kafka_sasl_mechanism: str = _f(
        "SCRAM-SHA-512", "SASL mechanism: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN.", group="kafka security"
    )
    kafka_sasl_username: str = _f("", "SASL user name.", group="kafka security")
    kafka_sasl_password: Secret = _f(Secret(""), "SASL password (secret).", group="kafka security")
    # -- validation ---------------------------------------------------------------------------
    currencies: tuple[str, ...] = _f(
        ("USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "INR", "CNY", "SEK", "NOK", "DKK", "BRL"),
        "Accepted ISO-4217 currency codes (comma separated).",
        group="validation",
    )
    max_event_age_days: int = _f(
        3650, "Events older than this are rejected as implausible (dead-lettered).", group="validation"
    )
    max_future_seconds: int = _f(
        86400, "Events dated further ahead of the wall clock than this are rejected.", group="validation"
    )
    max_cost_amount: Decimal = _f(
        Decimal("100000000"), "Largest absolute cost or revenue of one event.", group="validation"
    )
    max_message_bytes: int = _f(1_000_000, "Larger messages are dead-lettered unparsed.", group="validation")
    # -- stream processing --------------------------------------------------------------------
    window_seconds: int = _f(300, "Tumbling window size for cost totals per business unit.", group="stream")
    roi_window_seconds: int = _f(1800, "Tumbling window size for the cost/revenue ROI join.", group="stream")
    allowed_lateness_seconds: int = _f(
        60, "A window closes when the watermark passes its end plus this.", group="stream"
    )
    window_retention_seconds: int = _f(
        86400, "Closed windows are kept this long to absorb late events as corrections.", group="stream"
    )
    idle_timeout_seconds: float = _f(
        30.0,
        "A partition with no events for this long has its watermark advanced by the clock.",
        group="stream",
    )
    batch_size: int = _f(
        2000,
        "Records per batch: the intake service's bulk reads and the stream agents' batches.",
        group="stream",
    )
    batch_within_seconds: float = _f(
        0.05, "Longest wait to fill a batch (intake reads and agent batches alike).", group="stream"
    )
    anomaly_cold_cache: bool = _f(
        True,
        "Keep the decoded detector state (cold part) of up to 512 services in memory between batches "
        "instead of decoding it from the table every batch (finops_app/agents/anomalies.py ColdCache).",
        group="anomaly",
    )
    agent_retry_seconds: float = _f(
        60.0,
        "A stateful agent whose batch raises retries it (backoff 0.1 s doubling to 5 s) for this long, "
        "health degraded meanwhile; then the worker exits with code 1 without committing the batch, "
        "so the next worker replays it (at-least-once, counted once). 0 exits at the first failure.",
        group="stream",
    )
    faust_fast_delivery: bool = _f(
        False,
        "Experimental, off: hand fetched records to agents without Faust's four asyncio tasks per "
        "record, with a lean monitor (finops_app/faust_fixes.py). With it on, the SIGKILL failover "
        "test lost events in 1 run in 3, and failed 1 of 5 runs after the failover fixes (RELIABILITY.md).",
        group="stream",
    )
    restore_bulk_seconds: float = _f(
        60.0,
        "A worker taking over partitions reads their table changelogs in bulk for up to this long "
        "(capped at 0.8 of Faust's broker request timeout), then Faust restores the rest record by "
        "record; 0 leaves it all to Faust (finops_app/faust_restore.py).",
        group="stream",
    )
    fetch_min_bytes: int = _f(
        1,
        "Bytes a fetch of the worker's Faust consumer waits for, at most FINOPS_BATCH_WITHIN_SECONDS "
        "(Faust waited up to 1.5 s, which stalled live traffic); 1 answers as soon as there is a "
        "record (finops_app/faust_fetch.py).",
        group="stream",
    )
    producer_linger_ms: int = _f(
        5,
        "How long the producer gathers records before it sends a request (Kafka's linger.ms).",
        group="stream",
    )
    intake_process: bool = _f(
        True,
        "Run intake (validation, re-keying) in a child process of the worker, on another CPU core; "
        "the worker supervises it and merges its metrics and health (finops_app/intake_process.py). "
        "false: intake shares the worker's event loop (one process, ~110-135 MiB less peak memory in "
        "bench/run; for a host with a single CPU core).",
        group="stream",
    )
    gc_threshold: int = _f(
        20_000,
        "Young-generation threshold of Python's garbage collector (0 keeps Python's 700). Larger means "
        "fewer collections per event; /metrics shows gc_seconds_total (bench/results.md: GC seconds "
        "of the pipeline run).",
        group="stream",
    )
    gc_freeze: bool = _f(
        True,
        "Freeze every object alive once the worker started (gc.freeze): collections stop walking them.",
        group="stream",
    )
    ledger_sources: tuple[str, ...] = _f(
        ("cost_explorer", "focus"),
        "Sources that re-send events (restatements): counted once per event id, changes as deltas.",
        group="stream",
    )
    # -- anomaly detection --------------------------------------------------------------------
    anomaly_bucket_seconds: int = _f(
        300, "Cost series are summed per bucket of this size before scoring.", group="anomaly"
    )
    anomaly_min_amount: Decimal = _f(
        Decimal("1"), "Buckets whose excess over expectation is below this never alert.", group="anomaly"
    )
    anomaly_region_series: bool = _f(True, "Also track (service, region) series.", group="anomaly")
    anomaly_z_threshold: float = _f(
        4.0, "Alert when a bucket is this many standard deviations above expectation.", group="anomaly"
    )
    anomaly_half_life_points: float = _f(
        24.0, "Half-life of the EWMA level, in buckets (variance: four times this).", group="anomaly"
    )
    anomaly_warmup_points: int = _f(
        30, "Buckets a series must have seen before it may alert.", group="anomaly"
    )
    # -- business events and privacy --------------------------------------------------------
    pseudonym_key: Secret = _f(
        Secret("local-dev-pseudonym-key"),
        "HMAC key for user-id pseudonyms (secret; set your own in production).",
        group="privacy",
    )
    business_drop_fields: tuple[str, ...] = _f(
        ("email", "ip", "ip_address", "phone"),
        "Metadata fields removed from business events.",
        group="privacy",
    )
    business_hash_fields: tuple[str, ...] = _f(
        ("order_id", "session_id"), "Metadata fields replaced by their keyed hash.", group="privacy"
    )
    http_max_body_bytes: int = _f(
        5_000_000, "Largest request body the business-event endpoint accepts (413 beyond).", group="privacy"
    )
    http_max_items: int = _f(10_000, "Most business events in one POST.", group="privacy")
    web_token: Secret = _f(
        Secret(""), "Bearer token required by state-changing web endpoints (empty: none).", group="privacy"
    )
    dashboard_read_only: bool = _f(True, "Dashboard offers no state-changing controls.", group="privacy")
    # -- tags -------------------------------------------------------------------------------
    tag_business_unit: tuple[str, ...] = _f(
        ("business_unit", "BusinessUnit", "cost_center"), "Tag keys read as the business unit.", group="tags"
    )
    tag_project: tuple[str, ...] = _f(
        ("project", "ProjectId", "application"), "Tag keys read as the project.", group="tags"
    )
    tag_environment: tuple[str, ...] = _f(
        ("environment", "Environment", "env"), "Tag keys read as the environment.", group="tags"
    )
    # -- budgets, recommendations, actions ---------------------------------------------------
    budgets: Mapping[str, Decimal] = _f(
        {},
        "Monthly budget per business unit, `unit=amount,unit=amount`.",
        group="budgets",
    )
    rightsize_p95_threshold: float = _f(
        0.40, "Right-size when p95 utilisation over the lookback stays below this.", group="optimisation"
    )
    idle_threshold: float = _f(0.05, "Stop when p95 utilisation stays below this.", group="optimisation")
    utilisation_lookback_hours: int = _f(
        72, "Hours of utilisation a recommendation rests on.", group="optimisation"
    )
    storage_cold_threshold: float = _f(
        0.10,
        "Buckets/volumes whose p95 access rate stays below this move to a colder class.",
        group="optimisation",
    )
    price_table: str = _f(
        "",
        "JSON or CSV file overriding the embedded price snapshot (see core/prices.py).",
        group="optimisation",
    )
    actions_enabled: bool = _f(False, "Allow stop/resize actions at all.", group="optimisation")
    actions_dry_run: bool = _f(True, "Record actions without calling the cloud API.", group="optimisation")
    # -- Snowflake ----------------------------------------------------------------------------
    snowflake_account: str = _f("fakesnow", "Snowflake account identifier.", group="snowflake")
    snowflake_user: str = _f("finops", "Snowflake user.", group="snowflake")
    snowflake_password: Secret = _f(Secret("local"), "Snowflake password (secret).", group="snowflake")
    snowflake_private_key_file: str = _f(
        "", "PEM private key for key-pair auth (used instead of the password).", group="snowflake"
    )
    snowflake_private_key_passphrase: Secret = _f(
        Secret(""), "Passphrase of the private key (secret).", group="snowflake"
    )
    snowflake_role: str = _f("", "Snowflake role.", group="snowflake")
    snowflake_warehouse: str = _f("", "Snowflake warehouse.", group="snowflake")
    snowflake_database: str = _f("FINOPS", "Snowflake database.", group="snowflake")
    snowflake_host: str = _f(
        "127.0.0.1", "Host to connect to (empty: the account's own host).", group="snowflake"
    )
    snowflake_port: int = _f(8085, "Port (443 for a real account).", group="snowflake")
    snowflake_protocol: str = _f(
        "http", "http for the local server, https for a real account.", group="snowflake"
    )
    snowflake_network_timeout_seconds: int = _f(
        20, "Longest wait for one Snowflake request (the connector retries inside it).", group="snowflake"
    )
    snowflake_login_timeout_seconds: int = _f(20, "Longest wait for a Snowflake login.", group="snowflake")
    sink_stall_seconds: float = _f(
        30.0, "Health reports degraded while one load has been running longer than this.", group="snowflake"
    )
    sink_enabled: bool = _f(True, "Run the Snowflake sink inside the worker.", group="snowflake")
    sink_batch_rows: int = _f(5000, "Rows per bulk load.", group="snowflake")
    sink_max_age_seconds: float = _f(2.0, "Load a partial batch once it is this old.", group="snowflake")
    sql_jobs_interval_seconds: float = _f(
        300.0,
        "Interval of the scheduled SQL jobs (daily summary, SQL anomalies); 0 disables.",
        group="snowflake",
    )
    # -- AWS ----------------------------------------------------------------------------------
    aws_endpoint_url: str = _f("", "AWS endpoint override (the local moto server).", group="aws")
    aws_region: str = _f("us-east-1", "AWS region of the API clients.", group="aws")
    aws_access_key_id: str = _f("", "AWS access key id (empty: the default chain).", group="aws")
    aws_secret_access_key: Secret = _f(Secret(""), "AWS secret access key (secret).", group="aws")
    ce_poll_seconds: float = _f(
        0.0, "Cost Explorer poll interval inside the worker; 0 disables.", group="aws"
    )
    ce_lookback_hours: int = _f(48, "Hours re-read on every poll (AWS restates recent figures).", group="aws")
    ce_granularity: str = _f("HOURLY", "HOURLY or DAILY.", group="aws")
    ce_group_tag: str = _f("BusinessUnit", "Cost allocation tag grouped by beside SERVICE.", group="aws")
    cloudwatch_poll_seconds: float = _f(0.0, "CloudWatch utilisation poll interval; 0 disables.", group="aws")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FINOPS_<FIELD>`` variables; keyword overrides win. Unknown FINOPS_ names fail."""
        env = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        # the dev stack's own knob, read by dev/stack; accepted here so one .env serves both
        extra_ok = {"KAFKA_PORT", "CONTROLLER_PORT"}
        unknown = [
            k
            for k in env
            if k.startswith(ENV_PREFIX)
            and k[len(ENV_PREFIX) :].lower() not in known
            and k[len(ENV_PREFIX) :] not in extra_ok
        ]
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(sorted(unknown))}: see `finops settings` for the list"
            )
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.name, hints[f.name], raw)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if isinstance(self.budgets, str):
            object.__setattr__(self, "budgets", MappingProxyType(_parse_mapping(self.budgets, "budgets")))
        elif not isinstance(self.budgets, MappingProxyType):
            object.__setattr__(self, "budgets", MappingProxyType(dict(self.budgets)))
        for name in ("window_seconds", "roi_window_seconds", "batch_size", "topic_partitions"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.fetch_min_bytes < 1 or self.producer_linger_ms < 0:
            raise ConfigError(
                f"{ENV_PREFIX}FETCH_MIN_BYTES must be 1 or more and {ENV_PREFIX}PRODUCER_LINGER_MS 0 or more"
            )
        if self.gc_threshold < 0:
            raise ConfigError(f"{ENV_PREFIX}GC_THRESHOLD must be 0 (Python's default) or more")
        if self.restore_bulk_seconds < 0:
            raise ConfigError(f"{ENV_PREFIX}RESTORE_BULK_SECONDS must be 0 (off) or more")
        if self.agent_retry_seconds < 0:
            raise ConfigError(f"{ENV_PREFIX}AGENT_RETRY_SECONDS must be 0 (no retry) or more")
        if self.roi_window_seconds % self.window_seconds:
            raise ConfigError(
                f"{ENV_PREFIX}ROI_WINDOW_SECONDS ({self.roi_window_seconds}) must be a multiple of "
                f"{ENV_PREFIX}WINDOW_SECONDS ({self.window_seconds})"
            )
        if self.kafka_security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: "
                "use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )
        if self.ce_granularity not in ("HOURLY", "DAILY"):
            raise ConfigError(f"{ENV_PREFIX}CE_GRANULARITY must be HOURLY or DAILY")

    def as_environ(self) -> dict[str, str]:
        """These settings as FINOPS_* variables (for a child process; contains the secrets)."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                text = value.get()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, Mapping):
                text = ",".join(f"{k}={v}" for k, v in value.items())
            else:
                text = str(value)
            env[ENV_PREFIX + f.name.upper()] = text
        return env

    @property
    def broker_hosts(self) -> str:
        """Bootstrap servers as aiokafka wants them: ``host:port,host:port``."""
        url = self.broker_url
        parts = []
        for raw in url.replace(",", ";").split(";"):
            chunk = raw.strip()
            if "://" in chunk:
                chunk = chunk.split("://", 1)[1]
            if chunk:
                parts.append(chunk.rstrip("/"))
        return ",".join(parts)

    @property
    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{h}" for h in self.broker_hosts.split(","))


def _convert(name: str, hint: Any, raw: str) -> Any:
    env_name = ENV_PREFIX + name.upper()
    try:
        if hint is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Decimal:
            return Decimal(raw)
        if hint is Path:
            return Path(raw)
        if hint is Secret:
            return Secret(raw)
        if hint == tuple[str, ...]:
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if hint == Mapping[str, Decimal]:
            return MappingProxyType(_parse_mapping(raw, name))
        return raw
    except ConfigError:
        raise
    except (ValueError, InvalidOperation):
        shown = "<secret>" if hint is Secret else repr(raw)
        raise ConfigError(f"{env_name}={shown} is not a valid {getattr(hint, '__name__', hint)}") from None


def settings_table() -> list[tuple[str, str, str, str]]:
    """(variable, group, default, description) for every setting, for docs and ``--help``."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        if isinstance(default, Secret):
            shown = "(secret)" if default else "(empty)"
        elif isinstance(default, tuple):
            shown = ",".join(default)
        elif isinstance(default, Mapping):
            shown = ",".join(f"{k}={v}" for k, v in default.items()) or "(none)"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        rows.append((ENV_PREFIX + f.name.upper(), f.metadata["group"], shown, f.metadata["doc"]))
    return rows
