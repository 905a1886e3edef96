"""CloudWatch utilisation (``GetMetricData``) -> canonical ResourceEvents.

Resources in scope are :class:`Resource` descriptors, from EC2 ``DescribeInstances`` (with tags)
via :func:`discover_ec2` or supplied by the caller. For each resource the metrics configured for
its service are read (CPUUtilization by default), following ``NextToken``; CloudWatch's percent
becomes a utilisation in [0, 1] and every sample goes through ``parse_resource``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from finops_app.core.money import to_str
from finops_app.core.validate import Limits, parse_resource
from finops_app.errors import SourceError, ValidationError
from finops_app.sources import OnReject, Sleep, allocation_from_tags, call_with_retry, stable_id

logger = logging.getLogger(__name__)

MAX_QUERIES = 500  # GetMetricData's limit of MetricDataQueries per request
MAX_PAGES = 1000
_NOISE = 1e-6  # float noise tolerated around 0 % and 100 %


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One CloudWatch metric read for a service: namespace, name, the dimension naming the
    resource, the statistic, and the label it carries as ``metric`` on the ResourceEvent."""

    namespace: str
    metric_name: str
    dimension: str
    label: str = "cpu"
    stat: str = "Average"


DEFAULT_METRICS: Mapping[str, tuple[MetricSpec, ...]] = {
    "ec2": (MetricSpec("AWS/EC2", "CPUUtilization", "InstanceId"),),
    "rds": (MetricSpec("AWS/RDS", "CPUUtilization", "DBInstanceIdentifier"),),
    "elasticache": (MetricSpec("AWS/ElastiCache", "CPUUtilization", "CacheClusterId"),),
}
"""Percent metrics per service; add e.g. ``MetricSpec("CWAgent", "mem_used_percent", "InstanceId",
"memory")`` where the CloudWatch agent runs."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource whose utilisation is polled."""

    resource_id: str
    service: str = "ec2"
    region: str = "global"
    tags: Mapping[str, str] = field(default_factory=dict)
    instance_type: str = ""
    hourly_cost: Decimal = Decimal(0)
    resource_type: str = "instance"
    stateless: bool = False


def _instance(inst: Mapping[str, Any], settings: Any, prices: Mapping[str, Decimal]) -> Resource:
    tags = {str(t.get("Key")): str(t.get("Value", "")) for t in inst.get("Tags") or []}
    zone = str((inst.get("Placement") or {}).get("AvailabilityZone") or "")
    itype = str(inst.get("InstanceType") or "")
    return Resource(
        resource_id=str(inst["InstanceId"]),
        service="ec2",
        region=zone[:-1] if zone[-1:].isalpha() else settings.aws_region,
        tags=tags,
        instance_type=itype,
        hourly_cost=prices.get(itype, Decimal(0)),
        stateless=tags.get("stateless", tags.get("Stateless", "")).lower() in ("true", "yes", "1"),
    )


async def discover_ec2(
    client: Any,
    settings: Any,
    *,
    prices: Mapping[str, Decimal] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> list[Resource]:
    """Running EC2 instances with their tags; ``prices`` maps instance type -> hourly cost."""
    resources: list[Resource] = []
    params: dict[str, Any] = {"Filters": [{"Name": "instance-state-name", "Values": ["running"]}]}
    for page in range(1, MAX_PAGES + 1):
        call = partial(client.describe_instances, **params)
        response = await call_with_retry(call, context=f"ec2.describe_instances page {page}", sleep=sleep)
        for reservation in response.get("Reservations") or []:
            resources.extend(_instance(i, settings, prices or {}) for i in reservation.get("Instances") or [])
        if not response.get("NextToken"):
            return resources
        params = dict(params, NextToken=response["NextToken"])
    raise SourceError(f"ec2.describe_instances: more than {MAX_PAGES} pages")


def build_queries(
    resources: Sequence[Resource], metrics: Mapping[str, Sequence[MetricSpec]], period: int
) -> list[tuple[dict[str, Any], Resource, MetricSpec]]:
    """One ``MetricStat`` query per (resource, metric of its service); ids ``q0``, ``q1``..."""
    out: list[tuple[dict[str, Any], Resource, MetricSpec]] = []
    for resource in resources:
        for spec in metrics.get(resource.service, ()):
            dimensions = [{"Name": spec.dimension, "Value": resource.resource_id}]
            metric = {"Namespace": spec.namespace, "MetricName": spec.metric_name, "Dimensions": dimensions}
            stat = {"Metric": metric, "Period": period, "Stat": spec.stat}
            out.append(({"Id": f"q{len(out)}", "MetricStat": stat, "ReturnData": True}, resource, spec))
    return out


def to_utilisation(percent: float) -> float:
    """CloudWatch percent -> fraction, with float noise just outside [0, 100] clamped."""
    u = float(percent) / 100.0
    if -_NOISE <= u < 0.0:
        return 0.0
    if 1.0 < u <= 1.0 + _NOISE:
        return 1.0
    return u


def _wire(
    resource: Resource, spec: MetricSpec, sample: tuple[int, datetime, float], settings: Any
) -> dict[str, Any]:
    period, ts, value = sample
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    ts_ms = int(ts.timestamp() * 1000)
    metric_id = (spec.namespace, spec.metric_name, spec.stat, period)
    meta = {"namespace": spec.namespace, "metric_name": spec.metric_name, "stat": spec.stat, "period": period}
    return dict(
        allocation_from_tags(resource.tags, settings),
        event_id=stable_id("cw", resource.resource_id, *metric_id, ts_ms),
        timestamp=ts.isoformat().replace("+00:00", "Z"),
        resource_id=resource.resource_id,
        resource_type=resource.resource_type,
        instance_type=resource.instance_type,
        metric=spec.label,
        utilisation=to_utilisation(value),
        hourly_cost=to_str(resource.hourly_cost),
        service=resource.service,
        region=resource.region,
        provider="aws",
        stateless=resource.stateless,
        source="cloudwatch",
        metadata=dict(meta, percent=value, tags=dict(resource.tags)),
    )


def _log_reject(wire: dict[str, Any], exc: ValidationError) -> None:
    logger.error("CloudWatch sample rejected (%s): %s", exc, wire)


async def poll_utilisation(
    client: Any,
    settings: Any,
    resources: Sequence[Resource],
    now: datetime,
    *,
    period: int = 300,
    lookback: timedelta = timedelta(hours=1),
    metrics: Mapping[str, Sequence[MetricSpec]] = DEFAULT_METRICS,
    on_reject: OnReject = _log_reject,
    sleep: Sleep = asyncio.sleep,
    limits: Limits | None = None,
) -> list[dict[str, Any]]:
    """Utilisation samples of ``resources`` over ``[now - lookback, now)`` (aligned to ``period``)
    as canonical ResourceEvents, oldest first; samples that fail validation go to ``on_reject``."""
    limits = limits or Limits.from_settings(settings)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now  # naive means UTC, as everywhere
    end = datetime.fromtimestamp(int(now.timestamp()) // period * period, UTC)
    start = end - lookback
    if end <= start:
        raise ValueError("lookback must be positive")
    queries = build_queries(resources, metrics, period)
    events: list[dict[str, Any]] = []
    for first in range(0, len(queries), MAX_QUERIES):
        chunk = queries[first : first + MAX_QUERIES]
        by_id = {q["Id"]: (res, spec) for q, res, spec in chunk}
        params: dict[str, Any] = {
            "MetricDataQueries": [q for q, _, _ in chunk],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        for page in range(1, MAX_PAGES + 1):
            context = (
                f"cloudwatch.get_metric_data {start:%Y-%m-%dT%H:%M}Z+{lookback} queries {first}+ page {page}"
            )
            call = partial(client.get_metric_data, **params)
            response = await call_with_retry(call, context=context, sleep=sleep)
            for result in response.get("MetricDataResults") or []:
                if result.get("Id") not in by_id:
                    logger.warning("%s: result for unknown query %r ignored", context, result.get("Id"))
                    continue
                resource, spec = by_id[result["Id"]]
                for ts, value in zip(
                    result.get("Timestamps") or [], result.get("Values") or [], strict=False
                ):
                    wire = _wire(resource, spec, (period, ts, value), settings)
                    try:
                        events.append(parse_resource(wire, limits))
                    except ValidationError as exc:
                        on_reject(wire, exc)
            if not response.get("NextToken"):
                break
            params = dict(params, NextToken=response["NextToken"])
        else:
            raise SourceError(f"cloudwatch.get_metric_data: more than {MAX_PAGES} pages")
    events.sort(key=lambda e: (e["ts_ms"], e["resource_id"], e["metric"]))
    return events
