"""core.costseries: buckets close by watermark, so the read order of upstream partitions does not
change what is detected; drivers name the unit that caused the excess."""

from __future__ import annotations

from decimal import Decimal

from finops_app.core import costseries, detector
from finops_app.core.validate import Limits, iso, parse_cost

L = Limits(currencies=frozenset({"USD"}))
T0 = 1_767_225_600_000
B = 300_000
CFG = costseries.SeriesConfig(
    B, 0, Decimal(1), False, detector.DetectorParams(direction="up", min_abs_deviation=1)
)


def ev(i: int, ts: int, amount: float, unit: str) -> dict:
    return parse_cost(
        {
            "event_id": f"e{i}",
            "timestamp": iso(ts),
            "service": "ec2",
            "cost_amount": f"{amount:.2f}",
            "business_unit": unit,
            "resource_id": f"r-{unit}",
        },
        L,
    )


def stream() -> list[tuple[str, dict]]:
    """(source, event): source a carries ecommerce, source b analytics; a spike in bucket 60."""
    out = []
    for b in range(70):
        for k in range(3):
            ts = T0 + b * B + k * 60_000
            out.append(("a", ev(len(out), ts, 60.0 if (b == 60 and k == 0) else 3.0, "ecommerce")))
            out.append(("b", ev(len(out), ts + 1, 2.0, "analytics")))
    return out


def run(order: list[tuple[str, dict]]) -> list[tuple[str, str, str]]:
    st = costseries.new_service()
    marks = {"a": 0, "b": 0}
    opened = []
    for src, e in order:
        recs = costseries.observe(st, e, 0, CFG, 0)
        marks[src] = max(marks[src], e["ts_ms"])
        recs += costseries.advance(st, "ec2", min(marks.values()), CFG, 0)  # the aligned watermark
        opened += [
            (r["series"], r["window_start"], r["drivers"][0]["value"]) for r in recs if r["status"] == "open"
        ]
    return opened


def test_interleaving_of_sources_does_not_change_detection() -> None:
    events = stream()
    in_order = run(events)
    # source a read 6 buckets ahead of source b, as two partitions consumed in batches would be
    a = [x for x in events if x[0] == "a"]
    b = [x for x in events if x[0] == "b"]
    skewed = []
    while a or b:
        skewed += a[:18]
        del a[:18]
        skewed += b[:3]
        del b[:3]
    assert run(skewed) == in_order
    assert ("ec2", iso(T0 + 60 * B), "ecommerce") in in_order
    assert {s for s, _, _ in in_order} == {"ec2", "ec2|bu=ecommerce"}  # analytics never alerts


def test_state_stays_json_and_buckets_close() -> None:
    import orjson

    st = costseries.new_service()
    for _, e in stream()[:40]:
        costseries.observe(st, e, 0, CFG, 0)
    assert costseries.next_due(st, CFG) == T0 + B
    costseries.advance(st, "ec2", T0 + 20 * B, CFG, 0)
    assert all(not s["ob"] for s in st["s"].values())
    assert orjson.loads(orjson.dumps(st)) == st
