"""Records that travel on the topics: the three input events and every result.

Inputs arrive as raw bytes and are validated by ``core.validate`` (Faust's Record coercion is not
a validator); the records below describe their canonical shape and are what ``finops send`` and
the internal topics use. Output records keep the article's JSON field names, carry times as
ISO-8601 UTC strings and money as decimal strings with at most 4 places.
"""

from __future__ import annotations

from typing import Any

import faust


class _Base(faust.Record, include_metadata=False, serializer="json"):  # type: ignore[call-arg]
    def to_json_dict(self) -> dict[str, Any]:
        return dict(self.asdict())


class CostEvent(_Base):
    event_id: str
    timestamp: str
    service: str
    cost_amount: str
    event_type: str = "cloud_cost_incurred"
    region: str = "global"
    resource_id: str = ""
    business_unit: str = "unallocated"
    project_id: str = "unallocated"
    environment: str = "unknown"
    provider: str = "aws"
    account_id: str = ""
    currency: str = "USD"
    charge_category: str = "usage"
    charge_period_start: str = ""
    charge_period_end: str = ""
    source: str = "kafka"
    schema_version: int = 1
    ts_ms: int = 0
    metadata: dict[str, Any] = {}  # noqa: RUF012 - faust copies record defaults per instance


class BusinessEvent(_Base):
    event_id: str
    timestamp: str
    user_id: str = "anonymous"
    event_type: str = "business_event"
    feature: str = ""
    action: str = ""
    revenue_impact: str = "0"
    currency: str = "USD"
    business_unit: str = "unallocated"
    source: str = "kafka"
    schema_version: int = 1
    ts_ms: int = 0
    metadata: dict[str, Any] = {}  # noqa: RUF012 - see CostEvent


class ResourceEvent(_Base):
    event_id: str
    timestamp: str
    resource_id: str
    utilisation: float
    resource_type: str = "instance"
    instance_type: str = ""
    metric: str = "cpu"
    hourly_cost: str = "0"
    service: str = "ec2"
    region: str = "global"
    business_unit: str = "unallocated"
    project_id: str = "unallocated"
    environment: str = "unknown"
    provider: str = "aws"
    stateless: bool = False
    source: str = "kafka"
    schema_version: int = 1
    ts_ms: int = 0
    metadata: dict[str, Any] = {}  # noqa: RUF012 - see CostEvent


class CostAnomaly(_Base):
    anomaly_id: str
    anomaly_type: str
    status: str  # open | updated | closed
    service: str
    business_unit: str
    region: str
    series: str
    current_cost: str
    historical_average: str
    deviation_percent: float | None
    score: float
    severity: str
    drivers: list[dict[str, Any]]
    window_start: str
    window_end: str
    timestamp: str
    first_seen: str
    detected_at: str
    detection_latency_ms: int
    revision: int = 1


class WindowTotal(_Base):
    business_unit: str
    total_cost: str
    event_count: int
    window_start: str
    window_end: str
    revision: int
    currency: str = "USD"
    closed_at: str = ""
    late: bool = False


class RoiResult(_Base):
    business_unit: str
    cost: str
    revenue: str
    roi: float | None
    cost_events: int
    revenue_events: int
    unit_cost: str | None
    window_start: str
    window_end: str
    timestamp: str
    revision: int = 1


class Recommendation(_Base):
    recommendation_id: str
    resource_id: str
    kind: str  # rightsize | stop_idle | spot | storage_tier
    business_unit: str
    service: str
    region: str
    current: str
    proposed: str
    monthly_saving: str
    evidence: dict[str, Any]
    timestamp: str


class BudgetAlert(_Base):
    alert_id: str
    business_unit: str
    month: str
    budget: str
    spent: str
    forecast: str
    threshold_percent: int
    kind: str  # burn | forecast
    timestamp: str


class Action(_Base):
    action_id: str
    resource_id: str
    kind: str  # stop | resize
    dry_run: bool
    status: str  # recorded | succeeded | failed | refused
    reason: str
    recommendation_id: str
    detail: dict[str, Any]
    timestamp: str


class DeadLetter(_Base):
    source_topic: str
    partition: int
    offset: int
    error: str
    field: str | None
    raw: str  # the original bytes (the first 256 KiB of a larger message), base64
    raw_size: int
    timestamp: str
    stage: str = "intake"
    raw_truncated: bool = False
    raw_sha256: str = ""


RESULT_MODELS: dict[str, type[_Base]] = {
    m.__name__: m
    for m in (CostAnomaly, WindowTotal, RoiResult, Recommendation, BudgetAlert, Action, DeadLetter)
}
