"""Aggregate a py-spy ``-f raw`` profile (collapsed stacks) into self/total hotspot tables.

    .venv/bin/python bench/pyspy_summary.py PROFILE.txt [--top 25] [--markdown OUT.md]

py-spy's raw format is one line per distinct stack: ``frame;frame;...;leaf COUNT``, each frame
``function (path:line)``. *Self* counts the samples whose leaf is the frame (where the CPU was);
*total* counts the samples with the frame anywhere on the stack (once per sample even under
recursion). Frames are reported at three levels: the exact ``file:line`` of the frame, the function
(all its lines), and the file. Paths are shortened to ``finops_app/...`` or ``<package>/...``.
Idle samples are not in the file unless py-spy ran with ``--idle``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^():]*?)(?::(?P<line>\d+))?\)$")


def short_path(path: str) -> str:
    path = path.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/finops_app/" in path:
        return "finops_app/" + path.split("/finops_app/", 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.*)$", path)
    if m:
        return "stdlib/" + m.group(1)
    return path


# the worker's entry frames sit under everything: not a "project line" of interest
ENTRY_FILES = {"finops_app/__main__.py", "finops_app/app.py"}

# well-known parts of a Faust worker, by a regex on "function (path:line)" of any frame of the stack
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(rx))
    for name, rx in [
        ("intake service (finops_app/agents/intake.py)", r"\(finops_app/agents/intake\.py"),
        ("agent unit_windows (finops_app/agents/units.py)", r"\(finops_app/agents/units\.py"),
        ("agent cost_anomalies (finops_app/agents/anomalies.py)", r"\(finops_app/agents/anomalies\.py"),
        ("agent restatements (finops_app/agents/ledger.py)", r"\(finops_app/agents/ledger\.py"),
        ("idle ticks timer (finops_app/agents/ticks.py)", r"\(finops_app/agents/ticks\.py"),
        ("  of which core.validate", r"\(finops_app/core/validate\.py"),
        ("  of which core.costseries / detector", r"\(finops_app/core/(costseries|detector)\.py"),
        ("  of which core.windows", r"\(finops_app/core/windows\.py"),
        ("table reads/writes (faust Table / rocksdb store)", r"\((faust/tables/|faust/stores/)"),
        (
            "Faust commit (publish attached messages, flush, commit offsets)",
            r"(Consumer\.commit|_commit_tps|_handle_attached|publish_for_tp_offset|_commit_offsets|_commit_livelock)",
        ),
        (
            "Faust send path (Topic.send / attach / publish_message)",
            r"(Topic\.send |Topic\._send_now|Event\._attach|Topic\.publish_message|Attachments\.)",
        ),
        ("aiokafka producer sender (produce requests)", r"\(aiokafka/producer/"),
        ("aiokafka consumer fetcher (fetch, decode records)", r"\(aiokafka/consumer/"),
        (
            "Faust stream/conductor (deliver messages to agents)",
            r"\((faust/streams\.py|faust/transport/conductor\.py)",
        ),
        ("web server (aiohttp: /metrics, health)", r"\(aiohttp/"),
        ("results view (finops_app/web/results.py)", r"\(finops_app/web/results\.py"),
        ("logging", r"\(logging/"),
    ]
]


def package(path: str) -> str:
    """The top-level package of a frame's path (py-spy paths are relative to sys.path)."""
    if path.startswith("<"):
        return "interpreter (runpy, frozen modules)"
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in ("asyncio", "selectors"):
        return "asyncio + selectors (event loop, socket I/O)"
    if top in sys.stdlib_module_names:
        return f"stdlib {top}"
    return top


@dataclass(frozen=True)
class Frame:
    func: str
    path: str
    line: int | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    @property
    def label(self) -> str:
        return f"{self.func} ({self.where})" if self.path else self.func


FRAMEWORK = Frame(
    "(no project frame below the entry point: Faust / mode / aiokafka / asyncio only)", "", None
)


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text.strip())
    if not m:
        return Frame(text.strip(), "?", None)
    line = m.group("line")
    return Frame(m.group("func"), short_path(m.group("path")), int(line) if line else None)


@dataclass
class Profile:
    samples: int = 0
    idle: int = 0
    by_thread: Counter[str] = field(default_factory=Counter)
    idle_by_thread: Counter[str] = field(default_factory=Counter)
    self_line: Counter[Frame] = field(default_factory=Counter)
    total_line: Counter[Frame] = field(default_factory=Counter)
    self_func: Counter[tuple[str, str]] = field(default_factory=Counter)
    total_func: Counter[tuple[str, str]] = field(default_factory=Counter)
    self_file: Counter[str] = field(default_factory=Counter)
    total_file: Counter[str] = field(default_factory=Counter)
    app_self_line: Counter[Frame] = field(default_factory=Counter)  # leaf-most finops_app frame
    self_package: Counter[str] = field(default_factory=Counter)
    components: Counter[str] = field(default_factory=Counter)


def _process_label(cmdline: str) -> str:
    """A short name for a process of ``py-spy --subprocesses``: the worker or its intake child."""
    if "intake_process" in cmdline:
        return "intake process"
    if " worker" in cmdline or cmdline.endswith("worker"):
        return "worker"
    return cmdline[:40]


def load(path: Path) -> Profile:
    prof = Profile()
    for raw_line in path.read_text(errors="replace").splitlines():
        line = raw_line.rstrip()
        if not line:
            continue
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        parts = [f for f in stack_text.split(";") if f.strip()]
        thread = "all threads"
        # py-spy --subprocesses: 'process <pid>:"<cmdline>"' for the root process and each child down
        # to the sampled one; --threads: "thread (<tid>): <name>"
        process = None
        while parts and re.match(r"^\s*process \d+:", parts[0]):
            process = _process_label(parts.pop(0).split(":", 1)[1].strip().strip('"'))
        if parts and re.match(r"^\s*thread \(", parts[0]):
            thread = parts.pop(0).split(": ", 1)[-1].strip() or "thread"
        if process is not None:
            thread = f"{process} / {thread}" if thread != "all threads" else process
        frames = [parse_frame(f) for f in parts]
        if not frames:
            continue
        leaf = frames[-1]
        if (leaf.path == "selectors.py" and leaf.func.endswith(".select")) or (
            leaf.path.endswith("unix_events.py") and leaf.func.endswith("._do_waitpid")
        ):
            # the event loop waiting for I/O or a timer (py-spy --idle, or --nonblocking), or asyncio's
            # child watcher thread blocked in waitpid() for the intake child process
            prof.idle += count
            prof.idle_by_thread[thread] += count
            continue
        prof.samples += count
        prof.by_thread[thread] += count
        prof.self_line[leaf] += count
        prof.self_func[(leaf.func, leaf.path)] += count
        prof.self_file[leaf.path] += count
        prof.self_package[package(leaf.path)] += count
        for f in set(frames):
            prof.total_line[f] += count
        for key in {(f.func, f.path) for f in frames}:
            prof.total_func[key] += count
        for p in {f.path for f in frames}:
            prof.total_file[p] += count
        app = [f for f in frames if f.path.startswith("finops_app/") and f.path not in ENTRY_FILES]
        prof.app_self_line[app[-1] if app else FRAMEWORK] += count
        labels = [f.label for f in frames]
        for name, pattern in COMPONENTS:
            if any(pattern.search(label) for label in labels):
                prof.components[name] += count
    return prof


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:5.1f}%" if total else "  -  "


def markdown(prof: Profile, top: int = 25, title: str = "py-spy profile") -> str:
    n = prof.samples
    out = [
        f"### {title}",
        "",
        f"{n} samples with the worker busy (plus {prof.idle} idle, left out: the event loop waiting in "
        "select(), or asyncio's child watcher thread in waitpid()).",
        "",
    ]

    def table(head: str, rows: list[tuple[str, int]]) -> None:
        out.extend([f"| {head} | samples | share |", "|---|---:|---:|"])
        out.extend(f"| `{label}` | {c} | {_pct(c, n)} |" for label, c in rows)
        out.append("")

    if len(prof.by_thread) > 1 or "all threads" not in prof.by_thread:
        out.append("**Busy samples by thread** (each Python thread is sampled separately):\n")
        table("thread", list(prof.by_thread.most_common()))
    out.append(
        "**Where the samples fall** (share of samples with that part anywhere on the stack; parts overlap):\n"
    )
    table("part of the worker", [(name, prof.components.get(name, 0)) for name, _ in COMPONENTS])
    out.append("**Self time by package** (who burns the CPU):\n")
    table("package", list(prof.self_package.most_common(12)))
    out.append(f"**Top {top} self time by function** (where the CPU was; all lines of the function):\n")
    table("function (file)", [(f"{fn} ({p})", c) for (fn, p), c in prof.self_func.most_common(top)])
    out.append(f"**Top {top} self time by line** (file:line of the leaf frame):\n")
    table("frame", [(f.label, c) for f, c in prof.self_line.most_common(top)])
    out.append(f"**Top {top} total time by function** (samples with the function on the stack):\n")
    table("function (file)", [(f"{fn} ({p})", c) for (fn, p), c in prof.total_func.most_common(top)])
    out.append(
        f"**Top {top} project lines** (the innermost `finops_app` frame of each sample: the project "
        "line responsible for the time, including the library code it calls):\n"
    )
    table("finops_app frame", [(f.label, c) for f, c in prof.app_self_line.most_common(top)])
    out.append("**Self time by file** (top 15):\n")
    table("file", list(prof.self_file.most_common(15)))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--markdown", type=Path, help="write the tables here instead of stdout")
    args = parser.parse_args(argv)
    text = markdown(load(args.profile), args.top, title=f"py-spy profile {args.profile.name}")
    if args.markdown:
        args.markdown.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
