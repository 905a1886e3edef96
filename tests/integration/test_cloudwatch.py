"""CloudWatch utilisation polling against a real moto server (EC2 + CloudWatch) through aiobotocore.

Each test works in its own random AWS account (moto's ``x-moto-account-id`` header): instances
and metrics of other tests or runs are invisible to it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from finops_app.config import Secret, Settings
from finops_app.core.validate import Limits, parse_resource
from finops_app.errors import ValidationError
from finops_app.sources import create_client
from finops_app.sources.cloudwatch import Resource, discover_ec2, poll_utilisation, to_utilisation

PERIOD = 300


@dataclass
class Aws:
    ec2: Any
    cw: Any
    settings: Settings


@pytest.fixture
async def aws(aws_endpoint_url: str) -> AsyncIterator[Aws]:
    account = str(random.randrange(10**11, 10**12))
    settings = Settings(
        aws_endpoint_url=aws_endpoint_url, aws_access_key_id="test", aws_secret_access_key=Secret("test")
    )

    def isolate(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account

    async with create_client(settings, "ec2") as ec2, create_client(settings, "cloudwatch") as cw:
        ec2.meta.events.register("before-sign.ec2.*", isolate)
        cw.meta.events.register("before-sign.cloudwatch.*", isolate)
        yield Aws(ec2, cw, settings)


async def _launch(ec2: Any, tags: dict[str, str]) -> str:
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    response = await ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="m5.large",
        **({"TagSpecifications": spec} if tags else {}),
    )
    return str(response["Instances"][0]["InstanceId"])


def _end(now: datetime) -> datetime:
    return datetime.fromtimestamp(int(now.timestamp()) // PERIOD * PERIOD, UTC)


async def test_tagged_instances_utilisation_end_to_end(aws: Aws) -> None:
    tagged = await _launch(aws.ec2, {"BusinessUnit": "retail", "Project": "checkout", "Environment": "prod"})
    untagged = await _launch(aws.ec2, {})
    now = datetime.now(UTC)
    end = _end(now)
    samples = {tagged: [12.5, 100.0000001, 0.0], untagged: [55.0, 7.25, 99.0]}
    for instance, values in samples.items():
        await aws.cw.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": [{"Name": "InstanceId", "Value": instance}],
                    "Timestamp": end - timedelta(seconds=PERIOD * (3 - i)) + timedelta(seconds=10),
                    "Value": value,
                    "Unit": "Percent",
                }
                for i, value in enumerate(values)
            ],
        )

    resources = await discover_ec2(aws.ec2, aws.settings, prices={"m5.large": Decimal("0.096")})
    assert {r.resource_id for r in resources} == {tagged, untagged}
    events = await poll_utilisation(aws.cw, aws.settings, resources, now, period=PERIOD)
    again = await poll_utilisation(aws.cw, aws.settings, resources, now, period=PERIOD)

    assert [e["event_id"] for e in events] == [e["event_id"] for e in again]
    assert len({e["event_id"] for e in events}) == len(events) == 6
    got = {(e["resource_id"], e["timestamp"]): e["utilisation"] for e in events}
    for instance, values in samples.items():
        series = [got[k] for k in sorted(k for k in got if k[0] == instance)]
        assert series == pytest.approx([min(v / 100, 1.0) for v in values])
    assert all(0.0 <= e["utilisation"] <= 1.0 for e in events)
    by_id = {e["resource_id"]: e for e in events}
    assert (by_id[tagged]["business_unit"], by_id[tagged]["project_id"], by_id[tagged]["environment"]) == (
        "retail",
        "checkout",
        "prod",
    )
    assert (by_id[untagged]["business_unit"], by_id[untagged]["project_id"]) == ("unallocated", "unallocated")
    first = by_id[tagged]
    assert (first["hourly_cost"], first["instance_type"], first["region"]) == (
        "0.096",
        "m5.large",
        "us-east-1",
    )
    assert (first["metric"], first["source"], first["metadata"]["namespace"]) == (
        "cpu",
        "cloudwatch",
        "AWS/EC2",
    )
    limits = Limits.from_settings(aws.settings)
    assert all(parse_resource(e, limits) == e for e in events)  # canonical events re-validate to themselves


async def test_next_token_pages_are_followed_and_bad_samples_rejected() -> None:
    now = datetime(2026, 11, 1, 12, 7, tzinfo=UTC)
    t1, t2 = _end(now) - timedelta(minutes=10), _end(now) - timedelta(minutes=5)
    calls: list[dict[str, Any]] = []

    class Paged:
        async def get_metric_data(self, **params: Any) -> dict[str, Any]:
            calls.append(params)
            if "NextToken" not in params:
                results = [{"Id": "q0", "Timestamps": [t1], "Values": [-0.0000001]}]
                return {"MetricDataResults": results, "NextToken": "page-2"}
            return {"MetricDataResults": [{"Id": "q0", "Timestamps": [t2, t2], "Values": [40.0, 150.0]}]}

    rejected: list[tuple[dict[str, Any], ValidationError]] = []
    resource = Resource("db-1", service="rds", tags={"cost_center": "finance"})
    events = await poll_utilisation(
        Paged(), Settings(), [resource], now, period=PERIOD, on_reject=lambda w, e: rejected.append((w, e))
    )

    assert len(calls) == 2 and calls[1]["NextToken"] == "page-2"
    assert calls[0]["MetricDataQueries"] == calls[1]["MetricDataQueries"]
    (query,) = calls[0]["MetricDataQueries"]
    assert query["MetricStat"]["Metric"]["Namespace"] == "AWS/RDS"
    assert query["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": "db-1"}]
    assert calls[0]["EndTime"] - calls[0]["StartTime"] == timedelta(hours=1)
    assert [e["utilisation"] for e in events] == [0.0, 0.4]
    assert {e["business_unit"] for e in events} == {"finance"}
    ((wire, error),) = rejected  # 150 % is not float noise: it is not clamped but rejected
    assert (wire["utilisation"], error.field) == (1.5, "utilisation")
    assert to_utilisation(100.0000001) == 1.0 and to_utilisation(-1e-9) == 0.0
