"""Detector quality on seeded synthetic labelled series: prints a per-series and total quality table.

Each series has labelled anomaly onsets. As in the Numenta Anomaly Benchmark (NAB), every onset gets a
window of width ``0.1 * len / n_onsets`` centred on it, the first 15% of a series (at most 750 points) is
a probationary period whose detections are ignored, the first detection inside a window is a true
positive (earlier is better; later detections in the window are ignored) and every detection outside the
windows is a false positive. The NAB-like score uses the standard profile (TP +1, FP -0.11, FN -1, the
scaled sigmoid of the position) and is normalised over all series: 100 = every window caught at its
start, 0 = nothing detected.

    .venv/bin/python bench/detector_eval.py [--seeds 3] [--set z_threshold=3.5 ...] [--write bench/out]

The detector runs with ``finops_app.detect_csv.CSV_PARAMS`` (defaults, direction "both"), exactly as
``finops detect-csv`` does; ``--set`` overrides fields for exploration only. Twenty 5-minute, 1-minute
and hourly series (a few thousand points each) cover spikes, level shifts, drifts (unlabelled), daily
patterns and breaks of them, noisy low-volume counts, runaway growth, a random walk, gaps, heavy tails
and a variance change. Each series has its own seed (from its name), so adding one changes no other.
The last line scores ``anomaly_score >= t`` instead of ``is_anomaly``, for a few thresholds t.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finops_app.core.detector import DetectorParams, new_state, update
from finops_app.detect_csv import CSV_PARAMS

T0_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MIN5, HOUR, DAY = 300_000, 3_600_000, 86_400_000
THRESHOLDS = (0.5, 0.9, 0.99, 0.999, 0.9999)  # for scoring anomaly_score itself, as NAB's optimiser would


@dataclass
class Series:
    name: str
    ts: list[int]
    values: list[float]
    onsets: list[int]  # indices of labelled anomaly starts


def ar1(rng: random.Random, n: int, phi: float, sd: float) -> list[float]:
    """AR(1) noise with stationary standard deviation ``sd``."""
    e, out, k = 0.0, [], sd * math.sqrt(1 - phi * phi)
    for _ in range(n):
        e = phi * e + rng.gauss(0, k)
        out.append(e)
    return out


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def grid(n: int, step: int = MIN5) -> list[int]:
    return [T0_MS + i * step for i in range(n)]


def hour_of(ts: int) -> float:
    return (ts % DAY) / HOUR


def daily_sine(ts: int, amp: float) -> float:
    return amp * math.sin(2 * math.pi * (hour_of(ts) - 9) / 24)


def office_hours(ts: int) -> float:
    """0 at night, 1 from 09:00 to 18:00, with one-hour ramps (an art_daily-like square wave)."""
    h = hour_of(ts)
    return max(0.0, min(1.0, h - 8, 19 - h))


def s_spike(rng: random.Random) -> Series:
    n = 4032
    v = [100 + e for e in ar1(rng, n, 0.5, 4)]
    v[1600] += 45
    v[3000] += 30
    v[3001] += 30
    return Series("spike", grid(n), v, [1600, 3000])


def s_shift_up(rng: random.Random) -> Series:
    n = 4032
    v = [50 + e + (25 if i >= 2200 else 0) for i, e in enumerate(ar1(rng, n, 0.6, 3))]
    return Series("level_shift_up", grid(n), v, [2200])


def s_subtle(rng: random.Random) -> Series:
    """A 6-std single-point spike, then a lasting 2.5-std shift: near the limit of what should alert."""
    n = 4032
    v = [100 + rng.gauss(0, 5) + (30 if i == 1500 else 0) + (12.5 if i >= 2800 else 0) for i in range(n)]
    return Series("subtle_spike_shift", grid(n), v, [1500, 2800])


def s_shift_down(rng: random.Random) -> Series:
    n = 4032
    v = [200 + e - (60 if i >= 2400 else 0) for i, e in enumerate(ar1(rng, n, 0.5, 6))]
    return Series("level_shift_down", grid(n), v, [2400])


def s_drift(rng: random.Random) -> Series:
    n = 4032
    return Series(
        "slow_drift", grid(n), [100 + 60 * i / n + e for i, e in enumerate(ar1(rng, n, 0.5, 4))], []
    )


def s_seasonal_incident(rng: random.Random) -> Series:
    n, ts = 4032, grid(4032)
    onset = 10 * 288 + 2 * 12  # day 10, 02:00: a daytime-like level at night
    v = [100 + daily_sine(t, 30) + e + (40 if onset <= i < onset + 24 else 0) for i, (t, e) in
         enumerate(zip(ts, ar1(rng, n, 0.5, 3), strict=True))]  # fmt: skip
    return Series("seasonal_incident", ts, v, [onset])


def s_square_clean(rng: random.Random) -> Series:
    ts = grid(4032)
    return Series("seasonal_square", ts, [20 + 60 * office_hours(t) + rng.gauss(0, 2) for t in ts], [])


def s_square_jump(rng: random.Random) -> Series:
    ts = grid(4032)
    day = 11
    v = [20 + 60 * office_hours(t) * (1.4 if (t - T0_MS) // DAY == day else 1) + rng.gauss(0, 2) for t in ts]
    return Series("seasonal_jumpsup", ts, v, [day * 288 + 8 * 12 + 6])


def s_square_nojump(rng: random.Random) -> Series:
    """One day the office-hours rise does not happen (the service is down all day)."""
    ts, day = grid(4032), 11
    v = [20 + 60 * office_hours(t) * ((t - T0_MS) // DAY != day) + rng.gauss(0, 2) for t in ts]
    return Series("seasonal_nojump", ts, v, [day * 288 + 8 * 12 + 6])


def s_square_flat(rng: random.Random) -> Series:
    """One day stays flat at the daily mean instead of following the pattern."""
    ts, day = grid(4032), 10
    v = [(50 if (t - T0_MS) // DAY == day else 20 + 60 * office_hours(t)) + rng.gauss(0, 2) for t in ts]
    return Series("seasonal_flat_day", ts, v, [day * 288])


def s_low_clean(rng: random.Random) -> Series:
    return Series("low_volume", grid(4032), [float(poisson(rng, 2.0)) for _ in range(4032)], [])


def s_low_incident(rng: random.Random) -> Series:
    v = [float(poisson(rng, 15.0 if 2500 <= i < 2506 else 3.0)) for i in range(4032)]
    return Series("low_volume_incident", grid(4032), v, [2500])


def s_runaway(rng: random.Random) -> Series:
    """Cost per bucket grows by 1% of its base every 5 minutes (x4 in a day)."""
    v = [10 + rng.gauss(0, 0.5) + (0.1 * (i - 2000) if i >= 2000 else 0) for i in range(4032)]
    return Series("runaway_linear", grid(4032), v, [2000])


def s_runaway_slow(rng: random.Random) -> Series:
    """Grows by 0.2% of its base every 5 minutes (+58% a day): only 1.4 std above an EW level."""
    v = [10 + rng.gauss(0, 0.5) + (0.02 * (i - 2000) if i >= 2000 else 0) for i in range(4032)]
    return Series("runaway_slow", grid(4032), v, [2000])


def s_random_walk(rng: random.Random) -> Series:
    """A wandering level (random walk plus noise), nothing labelled: real metrics often look like this."""
    level, v = 500.0, []
    for _ in range(4032):
        level = max(50.0, level + rng.gauss(0, 3))
        v.append(level + rng.gauss(0, 5))
    return Series("random_walk", grid(4032), v, [])


def s_gaps(rng: random.Random) -> Series:
    n = 4032
    full = [(t, 100 + daily_sine(t, 20) + e) for t, e in zip(grid(n), ar1(rng, n, 0.5, 3), strict=True)]
    holes = [(900, 972), (1700, 1988), (2600, 2612)]
    keep = [i for i in range(n) if not any(a <= i < b for a, b in holes)]
    ts, v = [full[i][0] for i in keep], [full[i][1] for i in keep]
    spike = keep.index(3300)
    v[spike] += 40
    return Series("gaps", ts, v, [spike])


def s_hourly(rng: random.Random) -> Series:
    n, ts = 2000, grid(2000, HOUR)
    v = [500 + daily_sine(t, 150) + e + (250 if i == 1000 else 0) + (200 if i >= 1400 else 0)
         for i, (t, e) in enumerate(zip(ts, ar1(rng, n, 0.7, 20), strict=True))]  # fmt: skip
    return Series("hourly_seasonal", ts, v, [1000, 1400])


def s_heavy_tail(rng: random.Random) -> Series:
    n = 4032
    v = [50 + e + (rng.expovariate(1 / 15) if rng.random() < 0.01 else 0) + (50 if 3000 <= i < 3036 else 0)
         for i, e in enumerate(ar1(rng, n, 0.3, 3))]  # fmt: skip
    return Series("heavy_tailed", grid(n), v, [3000])


def s_cpu_drop(rng: random.Random) -> Series:
    n = 6000
    v = [min(100.0, max(0.0, 60 + e)) if not 4200 <= i < 4400 else max(0.0, 5 + rng.gauss(0, 1))
         for i, e in enumerate(ar1(rng, n, 0.8, 5))]  # fmt: skip
    return Series("cpu_drop_1min", grid(n, 60_000), v, [4200])


def s_variance(rng: random.Random) -> Series:
    v = [100 + rng.gauss(0, 10 if i >= 2600 else 2) for i in range(4032)]
    return Series("variance_change", grid(4032), v, [2600])


GENERATORS: list[Callable[[random.Random], Series]] = [
    s_spike, s_subtle, s_shift_up, s_shift_down, s_drift, s_seasonal_incident, s_square_clean, s_square_jump,
    s_square_nojump, s_square_flat,
    s_low_clean, s_low_incident, s_runaway, s_runaway_slow, s_random_walk, s_gaps, s_hourly, s_heavy_tail,
    s_cpu_drop, s_variance,
]  # fmt: skip


def scaled_sigmoid(y: float) -> float:
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass
class Result:
    name: str
    points: int
    windows: int
    tp: int
    lags_start: list[int]
    lags_onset: list[int]
    fp: int
    raw: float


def score_series(s: Series, detections: list[int]) -> Result:
    """NAB standard-profile scoring of the detection indices against the series' windows."""
    n = len(s.values)
    prob = min(int(0.15 * n), 750)
    width = int(0.1 * n / len(s.onsets)) if s.onsets else 0
    wins = [(max(0, o - width // 2), min(n - 1, o + width // 2)) for o in s.onsets]
    first: dict[int, int] = {}
    raw, fp = 0.0, 0
    for i in sorted(d for d in detections if d >= prob):
        inside = [k for k, (a, b) in enumerate(wins) if a <= i <= b]
        if inside:
            first.setdefault(inside[0], i)
            continue
        fp += 1
        prev = [(a, b) for a, b in wins if b < i]
        if prev:
            a, b = prev[-1]
            raw += 0.11 * scaled_sigmoid((i - b) / (b - a))
        else:
            raw -= 0.11
    for k, (a, b) in enumerate(wins):
        if k in first:
            raw += scaled_sigmoid(-(b - first[k] + 1) / (b - a + 1))
        else:
            raw -= 1.0
    lags_start = [first[k] - wins[k][0] for k in sorted(first)]
    lags_onset = [first[k] - s.onsets[k] for k in sorted(first)]
    return Result(s.name, n, len(wins), len(first), lags_start, lags_onset, fp, raw)


def merge(results: list[Result]) -> Result:
    """Sum the counts of one series over several seeds."""
    return Result(
        results[0].name, sum(r.points for r in results), sum(r.windows for r in results),
        sum(r.tp for r in results), [x for r in results for x in r.lags_start],
        [x for r in results for x in r.lags_onset], sum(r.fp for r in results), sum(r.raw for r in results),
    )  # fmt: skip


def show(lags: list[int]) -> str:
    """The lags themselves, or their median when there are many (several seeds)."""
    if not lags:
        return "-"
    return ",".join(map(str, lags)) if len(lags) <= 3 else f"med {sorted(lags)[len(lags) // 2]}"


def run(s: Series, params: DetectorParams) -> tuple[list[int], list[float]]:
    """Indices where is_anomaly is set, and the anomaly score of every point."""
    state, alerts, scores = new_state(), [], []
    for i, (t, v) in enumerate(zip(s.ts, s.values, strict=True)):
        state, verdict = update(state, t, v, params)
        scores.append(verdict.score)
        if verdict.is_anomaly:
            alerts.append(i)
    return alerts, scores


def write_csv(s: Series, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{s.name}.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("timestamp", "value"))
        for t, v in zip(s.ts, s.values, strict=True):
            w.writerow((datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"), f"{v:.4f}"))


def parse_overrides(items: list[str]) -> DetectorParams:
    fields = {f.name: f for f in dataclasses.fields(DetectorParams)}
    changes: dict[str, object] = {}
    for item in items:
        key, _, raw = item.partition("=")
        kind = type(getattr(CSV_PARAMS, key)) if key in fields else None
        if kind is None:
            raise SystemExit(f"unknown parameter {key!r}")
        changes[key] = raw if kind is str else kind(raw)
    return dataclasses.replace(CSV_PARAMS, **changes)  # type: ignore[arg-type]


def table(results: list[Result]) -> float:
    """Print the per-series rows and the total; return the normalised NAB-like score."""
    head = f"{'series':<22}{'points':>7}{'windows':>8}{'TP':>4}{'lag@start':>12}{'lag@onset':>12}{'FP':>5}"
    print(f"{head}{'NAB raw':>9}")
    print("-" * (len(head) + 9))
    for r in results:
        lags, onset = show(r.lags_start), show(r.lags_onset)
        print(f"{r.name:<22}{r.points:>7}{r.windows:>8}{r.tp:>4}{lags:>12}{onset:>12}{r.fp:>5}{r.raw:>9.3f}")
    windows, raw = sum(r.windows for r in results), sum(r.raw for r in results)
    print("-" * (len(head) + 9))
    print(f"{'total':<22}{sum(r.points for r in results):>7}{windows:>8}{sum(r.tp for r in results):>4}"
          f"{'':>24}{sum(r.fp for r in results):>5}{raw:>9.3f}")  # fmt: skip
    return normalised(results)


def normalised(results: list[Result]) -> float:
    """100 = every window caught at its first point, 0 = nothing detected (NAB's null detector)."""
    windows, raw = sum(r.windows for r in results), sum(r.raw for r in results)
    return 100 * (raw + windows) / (windows * scaled_sigmoid(-1.0) + windows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override detector params")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--seeds", type=int, default=1, help="run this many seeds and sum the counts")
    ap.add_argument("--write", type=Path, help="also write each series as a timestamp,value CSV here")
    args = ap.parse_args()
    params = parse_overrides(args.set)
    started = time.perf_counter()
    results: list[Result] = []
    by_threshold: dict[float, list[Result]] = {t: [] for t in THRESHOLDS}
    for gen in GENERATORS:
        per_seed = []
        for j in range(args.seeds):
            s = gen(random.Random(args.seed + zlib.crc32(gen.__name__.encode()) + 1000 * j))
            if args.write and j == 0:
                write_csv(s, args.write)
            alerts, scores = run(s, params)
            per_seed.append(score_series(s, alerts))
            for t in THRESHOLDS:
                by_threshold[t].append(score_series(s, [i for i, x in enumerate(scores) if x >= t]))
        results.append(merge(per_seed))
    score = table(results)
    print(f"NAB-like standard-profile score of is_anomaly: {score:.1f} / 100")
    best = max(THRESHOLDS, key=lambda t: normalised(by_threshold[t]))
    print(f"... of anomaly_score >= threshold instead (best of {len(THRESHOLDS)} thresholds, {best}): "
          f"{normalised(by_threshold[best]):.1f}")  # fmt: skip
    print(f"({time.perf_counter() - started:.1f}s; lag: points from the window start / the labelled onset)")


if __name__ == "__main__":
    main()
