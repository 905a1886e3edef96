"""Cost Explorer polling against a real moto server over HTTP through aiobotocore.

moto answers GetCostAndUsage from a queue of canned responses (one per distinct request) and does
not check the real API's rules, so the requests the poller sends are recorded with a botocore
``before-parameter-build`` hook and asserted on. Each test runs in its own random AWS account
(moto's ``x-moto-account-id`` header), so queues and cached answers never leak between tests.
"""

from __future__ import annotations

import json
import random
import re
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from finops_app.config import Secret, Settings
from finops_app.errors import SourceError, ValidationError
from finops_app.sources import call_with_retry
from finops_app.sources.cost_explorer import build_request, create_client, poll_costs, time_period

HOURLY = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:00:00Z$")
TAG = "BusinessUnit"


@dataclass
class Ce:
    client: Any
    url: str
    account: str
    sent: list[dict[str, Any]] = field(default_factory=list)

    def queue(self, *responses: dict[str, Any]) -> None:
        body = json.dumps({"results": list(responses), "account_id": self.account}).encode()
        request = urllib.request.Request(
            f"{self.url}/moto-api/static/ce/cost-and-usage-results",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        aws_endpoint_url=url, aws_access_key_id="test", aws_secret_access_key=Secret("test"), **overrides
    )


@pytest.fixture
async def ce(aws_endpoint_url: str) -> AsyncIterator[Ce]:
    account = str(random.randrange(10**11, 10**12))
    async with create_client(_settings(aws_endpoint_url), "ce") as client:
        box = Ce(client, aws_endpoint_url, account)

        def record(params: dict[str, Any], **_: Any) -> None:
            box.sent.append(json.loads(json.dumps(params)))

        def isolate(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        client.meta.events.register("before-parameter-build.ce.GetCostAndUsage", record)
        client.meta.events.register("before-sign.ce.GetCostAndUsage", isolate)
        yield box


def _now() -> datetime:
    return datetime.now(UTC).replace(minute=17, second=5, microsecond=0) - timedelta(hours=3)


def _hour(now: datetime, back: int) -> tuple[str, str]:
    start = now.replace(minute=0, second=0) - timedelta(hours=back)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return start.strftime(fmt), (start + timedelta(hours=1)).strftime(fmt)


def _result(
    period: tuple[str, str], groups: dict[tuple[str, str], str], estimated: bool = True
) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": period[0], "End": period[1]},
        "Total": {},
        "Groups": [
            {
                "Keys": [service, f"{TAG}${unit}"],
                "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}},
            }
            for (service, unit), amount in groups.items()
        ],
        "Estimated": estimated,
    }


def _sum(events: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(e["cost_amount"]) for e in events), Decimal(0))


def _assert_valid_requests(sent: list[dict[str, Any]], granularity: str = "HOURLY") -> None:
    assert sent, "no request was sent"
    for params in sent:
        assert len(params["GroupBy"]) <= 2
        assert params["Granularity"] == granularity
        start, end = params["TimePeriod"]["Start"], params["TimePeriod"]["End"]
        if granularity == "HOURLY":
            assert HOURLY.match(start) and HOURLY.match(end), params["TimePeriod"]
        else:
            assert re.match(r"^\d{4}-\d\d-\d\d$", start) and re.match(r"^\d{4}-\d\d-\d\d$", end)
        assert end > start  # same fixed-width format: string order is time order


async def test_two_pages_hourly_bounds_and_untagged_rows(ce: Ce) -> None:
    now = _now()
    h1, h2 = _hour(now, 2), _hour(now, 1)
    ce.queue(
        {
            "ResultsByTime": [_result(h1, {("Amazon EC2", "retail"): "1.25", ("Amazon S3", ""): "0.5"})],
            "NextPageToken": "page-2",
            "DimensionValueAttributes": [],
        },
        {
            "ResultsByTime": [_result(h2, {("Amazon EC2", "retail"): "2.0000000001"}, estimated=False)],
            "DimensionValueAttributes": [],
        },
    )
    state: dict[str, Any] = {}

    events = await poll_costs(ce.client, _settings(ce.url), now, state, account_id=ce.account)

    assert len(ce.sent) == 2
    assert "NextPageToken" not in ce.sent[0] and ce.sent[1]["NextPageToken"] == "page-2"
    _assert_valid_requests(ce.sent)
    assert ce.sent[0]["GroupBy"] == [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "TAG", "Key": TAG}]
    end = now.replace(minute=0, second=0)
    assert ce.sent[0]["TimePeriod"] == {
        "Start": (end - timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "End": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert len(events) == 3 and _sum(events) == Decimal("3.7500000001")
    by_service = {(e["service"], e["business_unit"]): e for e in events}
    assert set(by_service) == {("Amazon EC2", "retail"), ("Amazon S3", "unallocated")}
    s3 = by_service[("Amazon S3", "unallocated")]
    assert (s3["provider"], s3["source"], s3["account_id"]) == ("aws", "cost_explorer", ce.account)
    assert s3["metadata"]["estimated"] is True and s3["charge_period_start"].startswith(h1[0][:13])
    assert len({e["event_id"] for e in events}) == 3


async def test_a_restated_period_is_corrected_never_double_counted(ce: Ce) -> None:
    now = _now()
    h1, h2, h3 = _hour(now, 2), _hour(now, 1), _hour(now, 0)
    ce.queue(
        {"ResultsByTime": [_result(h1, {("Amazon EC2", "retail"): "10.00", ("AWS Lambda", "web"): "1.00"})]},
        # one hour later the same period is re-read: EC2 restated down, Lambda unchanged, one new hour
        {
            "ResultsByTime": [
                _result(h1, {("Amazon EC2", "retail"): "8.75", ("AWS Lambda", "web"): "1.00"}),
                _result(h2, {("Amazon EC2", "retail"): "3.00"}),
            ]
        },
        # and again: the Lambda group vanished from the first hour, EC2 restated up
        {
            "ResultsByTime": [
                _result(h1, {("Amazon EC2", "retail"): "9.50"}),
                _result(h2, {("Amazon EC2", "retail"): "3.00"}),
                _result(h3, {}),
            ]
        },
    )
    state: dict[str, Any] = {}
    settings = _settings(ce.url)

    first = await poll_costs(ce.client, settings, now, state, account_id=ce.account)
    again = await poll_costs(ce.client, settings, now, state, account_id=ce.account)  # same answer
    second = await poll_costs(ce.client, settings, now + timedelta(hours=1), state, account_id=ce.account)
    third = await poll_costs(ce.client, settings, now + timedelta(hours=2), state, account_id=ce.account)

    assert _sum(first) == Decimal("11.00") and again == []
    (correction,) = [e for e in second if e["charge_category"] == "correction"]
    base = next(e for e in first if e["service"] == "Amazon EC2")
    assert correction["event_id"] == base["event_id"] + ":r1"
    assert correction["cost_amount"] == "-1.25"
    assert correction["metadata"]["corrects"] == base["event_id"]
    assert (correction["metadata"]["previous"], correction["metadata"]["restated"]) == ("10", "8.75")
    assert (correction["timestamp"], correction["business_unit"]) == (base["timestamp"], "retail")
    assert _sum(first + second) == Decimal("8.75") + Decimal("1.00") + Decimal("3.00")
    assert {e["cost_amount"] for e in third} == {"0.75", "-1"}  # EC2 up 0.75, Lambda gone
    everything = first + second + third
    assert _sum(everything) == Decimal("9.50") + Decimal("3.00")  # the latest figures, once each
    assert len({e["event_id"] for e in everything}) == len(everything)
    _assert_valid_requests(ce.sent)


async def test_region_enrichment_is_a_second_query_never_summed(ce: Ce) -> None:
    now = _now()
    h1 = _hour(now, 1)
    by_region = {
        "TimePeriod": {"Start": h1[0], "End": h1[1]},
        "Groups": [
            {
                "Keys": ["Amazon EC2", "us-east-1"],
                "Metrics": {"UnblendedCost": {"Amount": "3", "Unit": "USD"}},
            },
            {
                "Keys": ["Amazon EC2", "eu-west-1"],
                "Metrics": {"UnblendedCost": {"Amount": "1", "Unit": "USD"}},
            },
            {
                "Keys": ["Amazon S3", "us-east-1"],
                "Metrics": {"UnblendedCost": {"Amount": "2", "Unit": "USD"}},
            },
        ],
    }
    ce.queue(
        {"ResultsByTime": [_result(h1, {("Amazon EC2", "retail"): "4", ("Amazon S3", "retail"): "2"})]},
        {"ResultsByTime": [by_region]},
    )

    events = await poll_costs(
        ce.client, _settings(ce.url), now, {}, account_id=ce.account, enrich_regions=True
    )

    assert [p["GroupBy"][1]["Key"] for p in ce.sent] == [TAG, "REGION"]
    _assert_valid_requests(ce.sent)
    assert _sum(events) == Decimal(6)
    regions = {e["service"]: (e["region"], e["metadata"].get("region_costs")) for e in events}
    assert regions == {
        "Amazon EC2": ("multiple", {"us-east-1": "3", "eu-west-1": "1"}),
        "Amazon S3": ("us-east-1", None),
    }


async def test_daily_bounds_and_the_request_rules(ce: Ce) -> None:
    now = _now()
    ce.queue({"ResultsByTime": []})
    await poll_costs(
        ce.client,
        _settings(ce.url, ce_granularity="DAILY", ce_lookback_hours=1),
        now,
        {},
        account_id=ce.account,
    )
    _assert_valid_requests(ce.sent, "DAILY")
    period = ce.sent[0]["TimePeriod"]
    assert period["End"] == now.strftime("%Y-%m-%d")
    assert period["Start"] == (now - timedelta(days=1)).strftime("%Y-%m-%d")

    same = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="empty HOURLY range"):
        time_period(same, same + timedelta(minutes=20), "HOURLY")
    with pytest.raises(ValueError, match="empty DAILY range"):
        time_period(same, same.replace(hour=23), "DAILY")
    assert time_period(same, same + timedelta(hours=1), "HOURLY") == {
        "Start": "2025-01-15T09:00:00Z",
        "End": "2025-01-15T10:00:00Z",
    }
    dims = [{"Type": "DIMENSION", "Key": k} for k in ("SERVICE", "REGION", "LINKED_ACCOUNT")]
    with pytest.raises(ValueError, match="at most 2 GroupBy"):
        build_request({"Start": "2025-01-15", "End": "2025-01-16"}, "DAILY", "UnblendedCost", dims)


def _throttled(
    op: str = "GetCostAndUsage", code: str = "ThrottlingException", status: int = 400
) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        op,
    )


async def test_throttling_is_retried_with_backoff_against_the_real_server(ce: Ce) -> None:
    now = _now()
    ce.queue({"ResultsByTime": [_result(_hour(now, 1), {("Amazon EC2", "retail"): "5"})]})
    failures = [
        _throttled(),
        _throttled(code="LimitExceededException"),
        EndpointConnectionError(endpoint_url="x"),
    ]
    sleeps: list[float] = []

    class Flaky:
        async def get_cost_and_usage(self, **params: Any) -> Any:
            if failures:
                raise failures.pop(0)
            return await ce.client.get_cost_and_usage(**params)

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    events = await poll_costs(Flaky(), _settings(ce.url), now, {}, account_id=ce.account, sleep=sleep)

    assert _sum(events) == Decimal(5) and len(ce.sent) == 1
    assert len(sleeps) == 3 and all(0 <= d <= cap for d, cap in zip(sleeps, (0.5, 1.0, 2.0), strict=True))


async def test_retry_gives_up_with_the_request_context_and_never_retries_client_errors() -> None:
    calls = 0

    async def always_throttled() -> None:
        nonlocal calls
        calls += 1
        raise _throttled(status=503)

    async def no_sleep(_: float) -> None:
        return None

    with pytest.raises(SourceError, match=r"ce\.get_cost_and_usage 2025-01-15: gave up after 4 attempts"):
        await call_with_retry(
            always_throttled, context="ce.get_cost_and_usage 2025-01-15", attempts=4, sleep=no_sleep
        )
    assert calls == 4

    async def denied() -> None:
        nonlocal calls
        calls += 1
        raise _throttled(code="AccessDeniedException", status=400)

    calls = 0
    with pytest.raises(SourceError, match="AccessDenied"):
        await call_with_retry(denied, context="ce", sleep=no_sleep)
    assert calls == 1

    async def bug() -> None:
        raise TypeError("a bug, not an AWS failure")

    with pytest.raises(TypeError):  # surfaces as itself, never disguised as a SourceError
        await call_with_retry(bug, context="ce", sleep=no_sleep)


async def test_rows_that_fail_validation_go_to_on_reject(ce: Ce) -> None:
    now = _now()
    bad = _result(_hour(now, 1), {("Amazon EC2", "retail"): "not-a-number", ("Amazon S3", "retail"): "1"})
    bad["Groups"][1]["Metrics"]["UnblendedCost"]["Unit"] = "XXX"
    ce.queue({"ResultsByTime": [bad]})
    rejected: list[tuple[dict[str, Any], ValidationError]] = []
    state: dict[str, Any] = {}

    events = await poll_costs(
        ce.client,
        _settings(ce.url),
        now,
        state,
        account_id=ce.account,
        on_reject=lambda w, e: rejected.append((w, e)),
    )

    assert events == [] and state == {}
    assert sorted(e.field or "" for _, e in rejected) == ["cost_amount", "currency"]
