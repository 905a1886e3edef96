"""In-process metrics: counters, gauges and latency histograms, rendered as Prometheus text.

Agents count events in and out per topic, dead letters, processing latency and detection
latency; the sink reports its batches, rows and failures. ``render()`` serves ``/metrics``.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted((labels or {}).items()))


class Histogram:
    __slots__ = ("counts", "n", "recent", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS_MS) + 1)
        self.n = 0
        self.total = 0.0
        self.recent: list[float] = []

    def observe(self, value_ms: float) -> None:
        self.counts[bisect.bisect_left(_BUCKETS_MS, value_ms)] += 1
        self.n += 1
        self.total += value_ms
        self.recent.append(value_ms)
        if len(self.recent) > 2048:
            del self.recent[:1024]

    def quantile(self, q: float) -> float | None:
        if not self.recent:
            return None
        data = sorted(self.recent)
        return data[min(len(data) - 1, int(q * len(data)))]


class Metrics:
    """Thread-safe enough for one event loop plus the sink's executor threads.

    Nothing that can run while the lock is held may call back in: the lock is not reentrant. A
    garbage collector callback can run inside any allocation, including one under this lock, so
    figures kept by such callbacks are pulled at read time instead (``add_collector``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collectors: list[Callable[[Metrics], None]] = []
        self.counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.histograms: dict[str, dict[Labels, Histogram]] = defaultdict(dict)
        self.help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        key = _labels(labels)
        with self._lock:
            series = self.counters[name]
            series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self.gauges[name][_labels(labels)] = value

    def observe(self, name: str, value_ms: float, labels: dict[str, str] | None = None) -> None:
        key = _labels(labels)
        with self._lock:
            hist = self.histograms[name].get(key)
            if hist is None:
                hist = self.histograms[name][key] = Histogram()
            hist.observe(value_ms)

    def put_counter(self, name: str, total: float, labels: dict[str, str] | None = None) -> None:
        """Set a counter to a total kept elsewhere (a collector's)."""
        key = _labels(labels)
        with self._lock:
            self.counters[name][key] = total

    def add_collector(self, collect: Callable[[Metrics], None]) -> None:
        """``collect(metrics)`` runs before the metrics are read (``counter``, ``render``)."""
        self._collectors.append(collect)

    def collect(self) -> None:
        for collect in list(self._collectors):
            collect(self)

    def counter(self, name: str, labels: dict[str, str] | None = None) -> float:
        self.collect()
        return self.counters.get(name, {}).get(_labels(labels), 0.0)

    def histogram(self, name: str, labels: dict[str, str] | None = None) -> Histogram | None:
        return self.histograms.get(name, {}).get(_labels(labels))

    def render(self) -> str:
        lines: list[str] = []
        self.collect()
        with self._lock:
            for kind, family in (("counter", self.counters), ("gauge", self.gauges)):
                for name, series in sorted(family.items()):
                    lines.append(f"# TYPE finops_{name} {kind}")
                    lines.extend(f"finops_{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items()))
            for name, hseries in sorted(self.histograms.items()):
                lines.append(f"# TYPE finops_{name} histogram")
                for k, h in sorted(hseries.items()):
                    cumulative = 0
                    bounds = [f"{b / 1000:g}" for b in _BUCKETS_MS] + ["+Inf"]
                    for le, count in zip(bounds, h.counts, strict=True):
                        cumulative += count
                        lines.append(f"finops_{name}_bucket{_fmt(k, ('le', le))} {cumulative}")
                    lines.append(f"finops_{name}_sum{_fmt(k)} {h.total / 1000:g}")
                    lines.append(f"finops_{name}_count{_fmt(k)} {h.n}")
        return "\n".join(lines) + "\n"


def _fmt(labels: Iterable[tuple[str, str]], extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
