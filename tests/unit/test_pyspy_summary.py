"""bench/pyspy_summary.py reads ``py-spy record -f raw --threads --subprocesses`` stacks: each sample
is counted once, under its process (the worker or its intake child) and thread, and threads blocked
in waitpid() or the event loop's select() are idle, not busy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("pyspy_summary", ROOT / "bench" / "pyspy_summary.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("pyspy_summary", mod)
    spec.loader.exec_module(mod)
    return mod


WORKER = 'process 100:"/venv/bin/python -m finops_app worker -l info"'
CHILD = 'process 200:"/venv/bin/python -m finops_app.intake_process --parent 100"'
STACKS = "\n".join(
    [
        f"{WORKER};thread (100): MainThread;<module> (finops_app/__main__.py:5);"
        "process (finops_app/agents/units.py:232) 30",
        f"{WORKER};{CHILD};thread (200): MainThread;<module> (finops_app/intake_process.py:280);"
        "parse_cost (finops_app/core/validate.py:400) 12",
        f"{WORKER};thread (101): asyncio-waitpid-0;Thread.run (threading.py:982);"
        "ThreadedChildWatcher._do_waitpid (asyncio/unix_events.py:1404) 50",
        f"{WORKER};thread (100): MainThread;run_forever (asyncio/base_events.py:607);"
        "EpollSelector.select (selectors.py:468) 7",
        # without --subprocesses: no process frame
        "thread (100): MainThread;<module> (finops_app/__main__.py:5);observe_many "
        "(finops_app/core/costseries.py:160) 5",
    ]
)


def test_subprocess_stacks_are_counted_per_process_and_thread(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    raw.write_text(STACKS + "\n")
    prof = _module().load(raw)
    assert prof.samples == 30 + 12 + 5
    assert prof.idle == 50 + 7
    assert prof.by_thread == {
        "worker / MainThread": 30,
        "intake process / MainThread": 12,
        "MainThread": 5,
    }
    # the process and thread labels are not taken for frames of the code
    assert not [f for f in prof.total_line if f.func.startswith(("process ", "thread ("))]
    assert prof.self_func[("parse_cost", "finops_app/core/validate.py")] == 12
