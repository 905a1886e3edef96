"""Actions: a Recommendation dict in, an Action record dict out (EC2 stop / resize, or why not).

``stop_idle`` becomes a ``stop``; ``rightsize`` becomes a ``resize`` (stop, wait until stopped,
``ModifyInstanceAttribute InstanceType``, start again if it was running). Other kinds have no
action. The checks, in order, and the status each one gives:

- ``refused``: the kind has no action; ``FINOPS_ACTIONS_ENABLED`` is false; the resource is not an
  EC2 instance (``resource_type`` other than ``instance`` or an id not starting with ``i-``); a
  ``stop`` of a resource tagged ``environment=production`` (also ``prod``/``prd``): idle production
  instances are reported, never stopped automatically (a resize still goes ahead, the operator
  having enabled actions); a resize whose instance type is no longer the recommended ``current``.
- ``recorded`` with ``dry_run`` true: ``FINOPS_ACTIONS_DRY_RUN`` is true (the default); nothing is
  called, ``detail.plan`` lists the API calls that would have been made.
- ``succeeded`` or ``failed``: the calls were made through aiobotocore; ``reason`` carries the API
  error text. API and connection errors never raise: the outcome is the record.

``action_id`` is deterministic from the recommendation, action kind, mode and status, so replaying
a recommendation does not duplicate its record while a new outcome gets a record of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from finops_app.core.rightsizing import PRODUCTION
from finops_app.core.validate import iso
from finops_app.sources import stable_id

logger = logging.getLogger(__name__)

ClientFactory = Callable[[], AbstractAsyncContextManager[Any]]
ACTION_KINDS = {"stop_idle": "stop", "rightsize": "resize"}
WAIT_DELAY_S = 5
WAIT_MAX_ATTEMPTS = 60  # five minutes for an instance to reach "stopped"


class ActionSettings(Protocol):
    @property
    def actions_enabled(self) -> bool: ...
    @property
    def actions_dry_run(self) -> bool: ...


def ec2_client(settings: Any) -> ClientFactory:
    """A factory of aiobotocore EC2 client context managers built from the ``aws_*`` settings."""
    from finops_app.sources.cost_explorer import create_client

    def factory() -> AbstractAsyncContextManager[Any]:
        client: AbstractAsyncContextManager[Any] = create_client(settings, "ec2")
        return client

    return factory


def _plan(kind: str, instance_id: str, target: str) -> list[str]:
    if kind == "stop":
        return [f"StopInstances {instance_id}"]
    return [
        f"StopInstances {instance_id}",
        f"ModifyInstanceAttribute {instance_id} InstanceType={target}",
        f"StartInstances {instance_id} (if it was running)",
    ]


async def _stop(ec2: Any, instance_id: str) -> tuple[str, str, dict[str, Any]]:
    resp = await ec2.stop_instances(InstanceIds=[instance_id])
    change = (resp.get("StoppingInstances") or [{}])[0]
    states = {
        "previous_state": (change.get("PreviousState") or {}).get("Name", ""),
        "current_state": (change.get("CurrentState") or {}).get("Name", ""),
    }
    return "succeeded", "stop requested", states


async def _resize(ec2: Any, instance_id: str, current: str, target: str) -> tuple[str, str, dict[str, Any]]:
    desc = await ec2.describe_instances(InstanceIds=[instance_id])
    inst = desc["Reservations"][0]["Instances"][0]
    before_type, before_state = str(inst["InstanceType"]), str(inst["State"]["Name"])
    seen = {"previous_type": before_type, "previous_state": before_state}
    if before_type == target:
        return "succeeded", f"already {target}", seen
    if current and before_type != current:
        return "refused", f"instance is {before_type}, the recommendation was made for {current}", seen
    if before_state not in ("running", "stopping", "stopped"):
        return "refused", f"instance is {before_state}", seen
    if before_state != "stopped":
        await ec2.stop_instances(InstanceIds=[instance_id])
        waiter = ec2.get_waiter("instance_stopped")
        await waiter.wait(
            InstanceIds=[instance_id], WaiterConfig={"Delay": WAIT_DELAY_S, "MaxAttempts": WAIT_MAX_ATTEMPTS}
        )
    try:
        await ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": target})
    finally:  # restore a running instance even when the modification failed
        if before_state == "running":
            await ec2.start_instances(InstanceIds=[instance_id])
    return "succeeded", f"resized {before_type} -> {target}", {**seen, "restarted": before_state == "running"}


def _refusal(rec: Mapping[str, Any], kind: str, settings: ActionSettings) -> str:
    """Why this recommendation must not be acted on, or "" when it may."""
    evidence = rec.get("evidence") or {}
    instance_id = str(rec.get("resource_id", ""))
    if kind not in ACTION_KINDS.values():
        return f"no action for recommendation kind {rec.get('kind')!r}"
    if not settings.actions_enabled:
        return "actions are disabled (FINOPS_ACTIONS_ENABLED=false)"
    if str(evidence.get("resource_type", "instance")) != "instance" or not instance_id.startswith("i-"):
        return f"{instance_id!r} is not an EC2 instance"
    if kind == "stop" and str(evidence.get("environment", "")).lower() in PRODUCTION:
        return "production resources are never stopped automatically"
    if kind == "resize" and not str(rec.get("proposed", "")):
        return "the recommendation proposes no instance type"
    return ""


async def execute(
    recommendation: Mapping[str, Any],
    settings: ActionSettings,
    client_factory: ClientFactory,
    *,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Act on one recommendation as the settings allow; returns the Action field dict."""
    rec = recommendation
    kind = ACTION_KINDS.get(str(rec.get("kind")), str(rec.get("kind", "")))
    instance_id = str(rec.get("resource_id", ""))
    current, target = str(rec.get("current", "")), str(rec.get("proposed", ""))
    detail: dict[str, Any] = {"instance_id": instance_id, "plan": _plan(kind, instance_id, target)}
    if kind == "resize":
        detail |= {"current_type": current, "target_type": target}

    def record(status: str, reason: str, dry_run: bool) -> dict[str, Any]:
        rec_id = str(rec.get("recommendation_id", ""))
        logger.info("action %s %s on %s: %s (%s)", kind, status, instance_id, reason, rec_id)
        return {
            # the target too: a second proposal for the instance on the same day (same
            # recommendation id) is another action, not a restatement of the first
            "action_id": stable_id("action", rec_id, kind, target, dry_run, status),
            "resource_id": instance_id,
            "kind": kind,
            "dry_run": dry_run,
            "status": status,
            "reason": reason,
            "recommendation_id": rec_id,
            "detail": detail,
            "timestamp": iso(int(clock() * 1000)),
        }

    refusal = _refusal(rec, kind, settings)
    if refusal:
        return record("refused", refusal, True)
    if settings.actions_dry_run:
        return record("recorded", "dry run (FINOPS_ACTIONS_DRY_RUN=true): nothing was changed", True)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        async with client_factory() as ec2:
            if kind == "stop":
                status, reason, more = await _stop(ec2, instance_id)
            else:
                status, reason, more = await _resize(ec2, instance_id, current, target)
    except (BotoCoreError, ClientError, OSError, TimeoutError) as exc:
        logger.warning("action %s on %s failed: %s", kind, instance_id, exc)
        return record("failed", str(exc), False)
    detail |= more
    return record(status, reason, False)
