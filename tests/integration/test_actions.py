"""actions.execute against a real moto server through aiobotocore (EC2 stop / resize)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from finops_app import actions
from finops_app.config import Secret, Settings
from finops_app.models import Action

IMAGE_ID = "ami-12c6146b"  # one of moto's built-in AMIs

Launch = Callable[[str], Awaitable[str]]


def make_settings(endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "aws_endpoint_url": endpoint,
        "aws_region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": Secret("testing"),
        "actions_enabled": True,
        "actions_dry_run": False,
    }
    return Settings(**(values | overrides))


def recommendation(
    instance_id: str, kind: str, current: str, proposed: str, env: str = "dev"
) -> dict[str, Any]:
    return {
        "recommendation_id": f"rec-{instance_id}-{kind}",
        "resource_id": instance_id,
        "kind": kind,
        "business_unit": "retail",
        "service": "ec2",
        "region": "us-east-1",
        "current": current,
        "proposed": proposed,
        "monthly_saving": "70.0800",
        "evidence": {"resource_type": "instance", "environment": env, "instance_type": current},
        "timestamp": "2025-01-15T00:00:00.000Z",
    }


@pytest.fixture
def settings(aws_endpoint_url: str) -> Settings:
    return make_settings(aws_endpoint_url)


@pytest.fixture
def launch(settings: Settings) -> Launch:
    """Factory: start one instance of the given type, return its id."""

    async def run(instance_type: str) -> str:
        async with actions.ec2_client(settings)() as ec2:
            resp = await ec2.run_instances(
                ImageId=IMAGE_ID, MinCount=1, MaxCount=1, InstanceType=instance_type
            )
            return str(resp["Instances"][0]["InstanceId"])

    return run


async def describe(settings: Settings, instance_id: str) -> dict[str, Any]:
    async with actions.ec2_client(settings)() as ec2:
        resp = await ec2.describe_instances(InstanceIds=[instance_id])
        inst: dict[str, Any] = resp["Reservations"][0]["Instances"][0]
        return inst


def assert_action_record(action: dict[str, Any]) -> None:
    assert Action(**action).to_json_dict() == action


async def test_stop(settings: Settings, launch: Launch) -> None:
    iid = await launch("m5.large")
    action = await actions.execute(
        recommendation(iid, "stop_idle", "m5.large", "stopped"), settings, actions.ec2_client(settings)
    )
    assert (action["kind"], action["status"], action["dry_run"]) == ("stop", "succeeded", False)
    assert action["detail"]["previous_state"] == "running"
    assert (await describe(settings, iid))["State"]["Name"] in ("stopping", "stopped")
    assert_action_record(action)


async def test_resize(settings: Settings, launch: Launch) -> None:
    iid = await launch("m5.xlarge")
    rec = recommendation(iid, "rightsize", "m5.xlarge", "m5.large")
    action = await actions.execute(rec, settings, actions.ec2_client(settings))
    assert (action["kind"], action["status"], action["dry_run"]) == ("resize", "succeeded", False), action
    inst = await describe(settings, iid)
    assert inst["InstanceType"] == "m5.large"
    assert inst["State"]["Name"] in ("pending", "running")  # started again: it was running
    assert action["detail"]["restarted"] is True
    assert_action_record(action)


async def test_dry_run_changes_nothing(aws_endpoint_url: str, launch: Launch) -> None:
    settings = make_settings(aws_endpoint_url, actions_dry_run=True)
    iid = await launch("m5.xlarge")
    for rec in (
        recommendation(iid, "rightsize", "m5.xlarge", "m5.large"),
        recommendation(iid, "stop_idle", "m5.xlarge", "stopped"),
    ):
        action = await actions.execute(rec, settings, actions.ec2_client(settings))
        assert (action["status"], action["dry_run"]) == ("recorded", True)
        assert action["detail"]["plan"]
        assert_action_record(action)
    inst = await describe(settings, iid)
    assert (inst["InstanceType"], inst["State"]["Name"]) == ("m5.xlarge", "running")


@asynccontextmanager
async def _no_client() -> Any:
    raise AssertionError("no API call expected")
    yield  # pragma: no cover


def no_client() -> AbstractAsyncContextManager[Any]:
    return _no_client()


@pytest.mark.parametrize(
    ("overrides", "rec", "reason"),
    [
        ({"actions_enabled": False}, recommendation("i-1", "stop_idle", "m5.large", "stopped"), "disabled"),
        ({}, recommendation("i-1", "stop_idle", "m5.large", "stopped", env="production"), "production"),
        ({}, recommendation("i-1", "spot", "m5.large", "m5.large (spot)"), "no action"),
        ({}, recommendation("logs-bucket", "stop_idle", "STANDARD", "stopped"), "not an EC2 instance"),
        ({}, recommendation("i-1", "rightsize", "m5.large", ""), "proposes no instance type"),
    ],
)
async def test_refusals_make_no_call(
    aws_endpoint_url: str, overrides: dict[str, Any], rec: dict[str, Any], reason: str
) -> None:
    settings = make_settings(aws_endpoint_url, **overrides)
    action = await actions.execute(rec, settings, no_client)
    assert action["status"] == "refused" and reason in action["reason"]
    assert action["dry_run"] is True
    assert_action_record(action)


async def test_resize_refused_when_the_type_changed_meanwhile(settings: Settings, launch: Launch) -> None:
    iid = await launch("m5.2xlarge")
    action = await actions.execute(
        recommendation(iid, "rightsize", "m5.xlarge", "m5.large"), settings, actions.ec2_client(settings)
    )
    assert action["status"] == "refused" and "m5.2xlarge" in action["reason"]
    assert (await describe(settings, iid))["InstanceType"] == "m5.2xlarge"


async def test_api_errors_become_failed_records(settings: Settings) -> None:
    rec = recommendation("i-0000000000000dead", "stop_idle", "m5.large", "stopped")
    action = await actions.execute(rec, settings, actions.ec2_client(settings))
    assert action["status"] == "failed" and "InvalidInstanceID" in action["reason"]
    unreachable = make_settings("http://127.0.0.1:9")  # nothing listens on the discard port
    action = await actions.execute(rec, unreachable, actions.ec2_client(unreachable))
    assert action["status"] == "failed" and action["reason"]


async def test_action_ids_are_stable(aws_endpoint_url: str) -> None:
    settings = make_settings(aws_endpoint_url, actions_dry_run=True)
    rec = recommendation("i-1", "stop_idle", "m5.large", "stopped")
    first = await actions.execute(rec, settings, no_client)
    again = await actions.execute(rec, settings, no_client)
    assert first["action_id"] == again["action_id"]
    disabled = make_settings(aws_endpoint_url, actions_enabled=False)
    assert (await actions.execute(rec, disabled, no_client))["action_id"] != first["action_id"]
