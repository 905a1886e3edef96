"""Per-event cost of the boundary validators: ``parse_cost``, ``parse_business``, ``parse_resource``.

Builds N realistic payloads of each kind as JSON bytes (what the intake agents receive from
Kafka) and prints the microseconds per event of each parser, best of ``--repeat`` passes:

- ``demo``: the events ``finops_app.demo.generate`` produces (ISO ``...T..:..:..mmmZ`` strings,
  money as strings), going back from now so every timestamp passes the age/future limits;
- ``article``: the article's producer shape (``json.dumps(asdict(event), default=str)``: naive
  ``2025-01-15 09:30:00.123456`` timestamps, floats for money, fewer optional fields).

    .venv/bin/python bench/validate_bench.py --n 20000 --repeat 5
    .venv/bin/python bench/validate_bench.py --compare tests.unit.test_validate_reference

``--compare MODULE`` times another module with the same three parsers in the same run (the
original implementation is kept as ``tests.unit.test_validate_reference``); the machine may be
shared, so compare figures of one run rather than across runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from finops_app import demo, topics
from finops_app.core import validate

KINDS = {
    "cost": topics.COST_EVENTS,
    "business": topics.BUSINESS_EVENTS_RAW,
    "resource": topics.RESOURCE_EVENTS,
}


def demo_payloads(n: int, now_ms: int) -> dict[str, list[bytes]]:
    """N payloads of each kind from demo.generate, ending a minute before ``now_ms``."""
    out: dict[str, list[bytes]] = {k: [] for k in KINDS}
    by_topic = {t: k for k, t in KINDS.items()}
    span = 60 * demo.STEP_MS
    end = now_ms - 120_000
    start = end - span
    while min(len(v) for v in out.values()) < n:
        for topic, _key, event in demo.generate(start, end, seed=7):
            kind = by_topic.get(topic)
            if kind is not None and len(out[kind]) < n:
                out[kind].append(orjson.dumps(event))
        end, start = start, start - span
        if end < now_ms - 2 * 86400_000 * 365:
            break
    return out


def article_payloads(n: int, now_ms: int) -> dict[str, list[bytes]]:
    """The article's shape: naive timestamps with microseconds, float money, few optional fields."""
    rng = random.Random(11)
    services = ["ec2", "rds", "s3", "lambda", "eks"]
    regions = ["us-east-1", "us-west-2", "eu-west-1"]
    units = ["ecommerce", "analytics", "platform", "marketing", "unknown"]
    out: dict[str, list[bytes]] = {k: [] for k in KINDS}
    for i in range(n):
        ts = datetime.fromtimestamp((now_ms - rng.randrange(86400_000 * 30)) / 1000, UTC)
        naive = str(ts.replace(tzinfo=None))  # what default=str writes for a naive datetime
        svc, reg, unit = rng.choice(services), rng.choice(regions), rng.choice(units)
        out["cost"].append(
            orjson.dumps(
                {
                    "event_id": f"cost-{i:08d}",
                    "timestamp": naive,
                    "event_type": "cloud_cost_incurred",
                    "service": svc,
                    "region": reg,
                    "cost_amount": round(rng.lognormvariate(0.0, 1.0), 4),
                    "resource_id": f"i-{rng.randrange(16**8):08x}",
                    "business_unit": unit,
                    "metadata": {"tag": "x"},
                }
            )
        )
        out["business"].append(
            orjson.dumps(
                {
                    "event_id": f"biz-{i:08d}",
                    "timestamp": naive,
                    "event_type": "feature_usage",
                    "user_id": f"user-{rng.randrange(5000)}",
                    "feature": "checkout",
                    "action": "completed_purchase",
                    "revenue_impact": round(rng.lognormvariate(3.0, 0.5), 2),
                    "business_unit": unit,
                    "metadata": {"order_id": f"ORD-{i}"},
                }
            )
        )
        out["resource"].append(
            orjson.dumps(
                {
                    "event_id": f"res-{i:08d}",
                    "timestamp": int(ts.timestamp()),
                    "resource_id": f"i-{rng.randrange(16**8):08x}",
                    "utilization": round(rng.random(), 4),
                    "metadata": {"instance_type": "m5.large", "hourly_cost": 0.096},
                }
            )
        )
    return out


def seconds(
    parse: Callable[[Any, validate.Limits], dict[str, Any]], payloads: list[bytes], limits: validate.Limits
) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for raw in payloads:
        parse(raw, limits)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="payloads of each kind and shape")
    ap.add_argument("--repeat", type=int, default=5, help="passes; the best is reported")
    ap.add_argument(
        "--compare",
        metavar="MODULE",
        action="append",
        default=[],
        help="another module with parse_cost/parse_business/parse_resource",
    )
    args = ap.parse_args()

    now_ms = int(time.time() * 1000)
    limits = validate.Limits()
    shapes = {"demo": demo_payloads(args.n, now_ms), "article": article_payloads(args.n, now_ms)}
    modules = {"finops_app.core.validate": validate}
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # --compare tests.unit...
    for name in args.compare:
        modules[name] = importlib.import_module(name)

    for by_kind in shapes.values():  # every payload is valid (a ValidationError stops the bench)
        for kind, payloads in by_kind.items():
            for raw in payloads:
                getattr(validate, f"parse_{kind}")(raw, limits)
    # Passes of the modules alternate, so a burst of load on a shared machine hits them alike.
    best: dict[tuple[str, str, str], float] = {}
    for _ in range(args.repeat):
        for name, mod in modules.items():
            for shape, by_kind in shapes.items():
                for kind, payloads in by_kind.items():
                    t = seconds(getattr(mod, f"parse_{kind}"), payloads, limits) / len(payloads) * 1e6
                    best[name, shape, kind] = min(t, best.get((name, shape, kind), t))
    print(f"{args.n} payloads per kind and shape, best of {args.repeat} passes; µs/event")
    print(f"{'module':<40} {'shape':<8} {'cost':>8} {'business':>9} {'resource':>9}")
    for name in modules:
        for shape in shapes:
            row = [best[name, shape, kind] for kind in KINDS]
            print(f"{name:<40} {shape:<8} {row[0]:>8.2f} {row[1]:>9.2f} {row[2]:>9.2f}")


if __name__ == "__main__":
    main()
