"""Every topic of the app, declared once: names, keys, values and what reads and writes them.

Inputs carry raw bytes (validated by ``core.validate``); the ``finops.stream.*`` topics carry
validated events re-keyed for co-partitioning (the repartition step of ``group_by``); results
carry the records of ``models``. All topics are created by the app (auto-creation is off on the
local broker) with ``FINOPS_TOPIC_PARTITIONS`` partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faust

    from finops_app.config import Settings

# inputs (raw bytes, validated by the intake service)
COST_EVENTS = "finops.cost.events"  # key resource_id
BUSINESS_EVENTS_RAW = "finops.business.events.raw"  # key user id, personal data: short retention
BUSINESS_EVENTS = "finops.business.events"  # key pseudonymised user id
RESOURCE_EVENTS = "finops.resource.events"  # key resource_id
# validated and re-keyed (internal)
BY_UNIT = "finops.stream.by-unit"  # key business_unit: cost + business events + ticks
BY_SERVICE = "finops.stream.by-service"  # key service: cost events + ticks
BY_RESOURCE = "finops.stream.by-resource"  # key resource_id: utilisation samples
BY_ID = "finops.stream.by-id"  # key event_id: events of re-sending sources, for the ledger
# results
ANOMALIES = "finops.cost.anomalies"  # key service
AGGREGATIONS = "finops.cost.aggregations"  # key business_unit
ROI = "finops.roi.calculations"  # key business_unit
RECOMMENDATIONS = "finops.optimization.recommendations"  # key resource_id
BUDGET_ALERTS = "finops.budget.alerts"  # key business_unit
ACTIONS = "finops.actions"  # key resource_id
DEADLETTER = "finops.deadletter"  # key source topic

INPUTS = (COST_EVENTS, BUSINESS_EVENTS_RAW, BUSINESS_EVENTS, RESOURCE_EVENTS)
INTERNAL = (BY_UNIT, BY_SERVICE, BY_RESOURCE, BY_ID)
RESULTS = (ANOMALIES, AGGREGATIONS, ROI, RECOMMENDATIONS, BUDGET_ALERTS, ACTIONS, DEADLETTER)
ALL = INPUTS + INTERNAL + RESULTS

# topics whose data must not live long (raw personal data)
RETENTION_MS = {BUSINESS_EVENTS_RAW: 24 * 3600 * 1000}


@dataclass(frozen=True)
class Topics:
    """The app's topic objects (raw bytes values; agents decode with orjson)."""

    cost_events: faust.TopicT
    business_events_raw: faust.TopicT
    business_events: faust.TopicT
    resource_events: faust.TopicT
    by_unit: faust.TopicT
    by_service: faust.TopicT
    by_resource: faust.TopicT
    by_id: faust.TopicT
    anomalies: faust.TopicT
    aggregations: faust.TopicT
    roi: faust.TopicT
    recommendations: faust.TopicT
    budget_alerts: faust.TopicT
    actions: faust.TopicT
    deadletter: faust.TopicT

    def all(self) -> list[faust.TopicT]:
        return [getattr(self, name) for name in self.__dataclass_fields__]


def declare(app: faust.App, settings: Settings) -> Topics:
    """Declare every topic on ``app``; values are raw bytes, keys UTF-8 strings."""

    def topic(name: str) -> faust.TopicT:
        config = {}
        if name in RETENTION_MS:
            config["retention.ms"] = str(RETENTION_MS[name])
        return app.topic(
            settings.topic_prefix + name,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            replicas=settings.topic_replication,
            config=config or None,
            internal=True,  # created by the app, with the partitions above
        )

    names = {
        "cost_events": COST_EVENTS,
        "business_events_raw": BUSINESS_EVENTS_RAW,
        "business_events": BUSINESS_EVENTS,
        "resource_events": RESOURCE_EVENTS,
        "by_unit": BY_UNIT,
        "by_service": BY_SERVICE,
        "by_resource": BY_RESOURCE,
        "by_id": BY_ID,
        "anomalies": ANOMALIES,
        "aggregations": AGGREGATIONS,
        "roi": ROI,
        "recommendations": RECOMMENDATIONS,
        "budget_alerts": BUDGET_ALERTS,
        "actions": ACTIONS,
        "deadletter": DEADLETTER,
    }
    return Topics(**{attr: topic(name) for attr, name in names.items()})
