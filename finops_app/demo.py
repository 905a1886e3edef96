"""Demo traffic: seeded, realistic cost, business and utilisation events with known incidents.

Several business units run services in several regions; cost follows daily and weekly
seasonality, slow growth and noise; revenue follows the same traffic curve. Incidents of known
type and time are injected: a spike, a level shift, a slow leak and a runaway resource with low
utilisation. ``generate`` yields (topic, key, value-dict) in event-time order; the ``demo``
command produces them to Kafka and prints the incident list so alerts can be checked against it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from finops_app import topics
from finops_app.core.validate import iso

UNITS = ("ecommerce", "analytics", "platform", "marketing")
SERVICES = {"ec2": Decimal("0.85"), "rds": Decimal("0.60"), "s3": Decimal("0.12"), "lambda": Decimal("0.20")}
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
INSTANCE_TYPES = ("m5.xlarge", "m5.2xlarge", "c5.xlarge", "r5.large")
STEP_MS = 60_000  # one cost sample per resource per minute
GROWTH_FROM_MS = 1_767_225_600_000  # 2026-01-01: growth is counted from here (same traffic every run)


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str  # spike | level_shift | slow_leak | runaway
    start_ms: int
    end_ms: int
    service: str
    business_unit: str
    magnitude: float
    resource_id: str

    def describe(self) -> str:
        return (
            f"{self.kind:<12} {iso(self.start_ms)} .. {iso(self.end_ms)}  service={self.service} "
            f"unit={self.business_unit} x{self.magnitude:g} resource={self.resource_id}"
        )


@dataclass(frozen=True, slots=True)
class Resource:
    resource_id: str
    service: str
    region: str
    business_unit: str
    hourly: float
    instance_type: str
    environment: str


def fleet(rng: random.Random) -> list[Resource]:
    out = []
    for u, unit in enumerate(UNITS):
        for service, base in SERVICES.items():
            for i in range(2):
                region = REGIONS[(u + i) % len(REGIONS)]
                out.append(
                    Resource(
                        resource_id=f"{service}-{unit}-{i}",
                        service=service,
                        region=region,
                        business_unit=unit,
                        hourly=float(base) * (1 + u * 0.4) * rng.uniform(0.7, 1.3),
                        instance_type=INSTANCE_TYPES[(u + i) % len(INSTANCE_TYPES)],
                        environment="production" if i == 0 else "staging",
                    )
                )
    return out


def plan_incidents(start_ms: int, end_ms: int, rng: random.Random) -> list[Incident]:
    """Four incidents in the last third of the run, one of each kind, at seeded times."""
    span = end_ms - start_ms
    base = start_ms + span * 2 // 3
    slot = span // 12
    at = [base + k * slot + rng.randrange(0, max(1, slot // 2)) for k in range(4)]
    at = [a - a % STEP_MS for a in at]
    return [
        Incident("spike", at[0], at[0] + 15 * STEP_MS, "ec2", "ecommerce", 6.0, "ec2-ecommerce-0"),
        Incident("level_shift", at[1], end_ms, "rds", "analytics", 1.8, "rds-analytics-0"),
        Incident("slow_leak", at[2], end_ms, "s3", "platform", 3.0, "s3-platform-1"),
        Incident("runaway", at[3], end_ms, "ec2", "marketing", 12.0, "ec2-marketing-runaway"),
    ]


def traffic(ts_ms: int, start_ms: int = 0) -> float:
    """Relative traffic: daily curve peaking mid-afternoon UTC, quieter weekends, and growth of
    2 % a month since ``start_ms``."""
    hours = ts_ms / 3_600_000
    daily = 1 + 0.45 * math.sin(2 * math.pi * ((hours % 24) - 9) / 24)
    weekday = (int(hours // 24) + 3) % 7  # epoch day 0 was a Thursday
    weekly = 0.75 if weekday >= 5 else 1.0
    growth = 1 + 0.02 * max(0, ts_ms - start_ms) / 3_600_000 / 24 / 30
    return daily * weekly * growth


def _multiplier(inc: Incident, ts: int) -> float:
    if not inc.start_ms <= ts < inc.end_ms:
        return 1.0
    if inc.kind == "spike":
        return inc.magnitude
    if inc.kind == "level_shift":
        return inc.magnitude
    if inc.kind == "slow_leak":
        return 1 + (inc.magnitude - 1) * (ts - inc.start_ms) / max(1, inc.end_ms - inc.start_ms)
    return 1.0


def generate(
    start_ms: int, end_ms: int, seed: int = 7, incidents: list[Incident] | None = None
) -> Iterator[tuple[str, str, dict[str, object]]]:
    """(topic, key, event) for every minute from ``start_ms`` to ``end_ms``, in time order."""
    resources = fleet(random.Random(seed))
    rng = random.Random(f"{seed}:{start_ms}")
    incidents = plan_incidents(start_ms, end_ms, random.Random(seed)) if incidents is None else incidents
    runaway = next((i for i in incidents if i.kind == "runaway"), None)
    order = 0
    for ts in range(start_ms - start_ms % STEP_MS, end_ms, STEP_MS):
        level = traffic(ts, GROWTH_FROM_MS)
        for res in resources:
            mult = 1.0
            for inc in incidents:
                if inc.resource_id == res.resource_id:
                    mult *= _multiplier(inc, ts)
            usage = level if res.service != "s3" else 1.0
            cost = res.hourly / 60 * usage * mult * rng.gauss(1.0, 0.05)
            order += 1
            yield topics.COST_EVENTS, res.resource_id, _cost(res, ts, max(cost, 0.0), order)
            if ts % (5 * STEP_MS) == 0 and res.service in ("ec2", "rds"):
                util = min(1.0, max(0.0, 0.55 * level * rng.gauss(1.0, 0.1)))
                if res.environment == "staging":
                    util *= 0.15  # over-provisioned staging boxes: right-sizing candidates
                yield topics.RESOURCE_EVENTS, res.resource_id, _util(res, ts, util)
        if runaway is not None and runaway.start_ms <= ts < runaway.end_ms:
            res = Resource(
                runaway.resource_id,
                "ec2",
                "us-east-1",
                runaway.business_unit,
                0.9 * runaway.magnitude,
                "p3.8xlarge",
                "development",
            )
            order += 1
            yield topics.COST_EVENTS, res.resource_id, _cost(res, ts, res.hourly / 60, order)
            if ts % (5 * STEP_MS) == 0:
                yield topics.RESOURCE_EVENTS, res.resource_id, _util(res, ts, 0.02)
        for unit in UNITS:
            orders = _poisson(rng, 3.0 * level * (1 + UNITS.index(unit) * 0.3))
            for k in range(orders):
                order += 1
                yield (
                    topics.BUSINESS_EVENTS_RAW,
                    f"user-{rng.randrange(5000)}",
                    {
                        "event_id": f"demo-biz-{ts}-{unit}-{k}",
                        "timestamp": iso(ts + k),
                        "event_type": "feature_usage",
                        "user_id": f"user-{rng.randrange(5000)}",
                        "feature": "checkout",
                        "action": "completed_purchase",
                        "revenue_impact": f"{rng.lognormvariate(3.0, 0.5):.2f}",
                        "business_unit": unit,
                        "metadata": {"order_id": f"ORD-{order}", "email": "someone@example.com"},
                    },
                )


def _cost(res: Resource, ts: int, cost: float, order: int) -> dict[str, object]:
    return {
        "event_id": f"demo-cost-{res.resource_id}-{ts}",
        "timestamp": iso(ts),
        "event_type": "cloud_cost_incurred",
        "service": res.service,
        "region": res.region,
        "cost_amount": f"{cost:.6f}",
        "resource_id": res.resource_id,
        "business_unit": res.business_unit,
        "project_id": f"{res.business_unit}-core",
        "environment": res.environment,
        "provider": "aws",
        "currency": "USD",
        "charge_period_start": iso(ts),
        "charge_period_end": iso(ts + STEP_MS),
        "source": "demo",
        "metadata": {"seq": order},
    }


def _util(res: Resource, ts: int, util: float) -> dict[str, object]:
    return {
        "event_id": f"demo-util-{res.resource_id}-{ts}",
        "timestamp": iso(ts),
        "resource_id": res.resource_id,
        "resource_type": "instance",
        "instance_type": res.instance_type,
        "metric": "cpu",
        "utilisation": round(util, 4),
        "hourly_cost": f"{res.hourly:.4f}",
        "service": res.service,
        "region": res.region,
        "business_unit": res.business_unit,
        "environment": res.environment,
        "stateless": res.environment != "production",
        "source": "demo",
    }


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
