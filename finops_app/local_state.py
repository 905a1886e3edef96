"""Local table state survives only a clean stop; after a crash the changelogs are the truth.

Faust writes a table value to the local RocksDB at once, while the changelog record and the agent's
output records (a closed window's total, say) leave through the producer a moment later. A worker
killed in between (SIGKILL, OOM, power) leaves local state that is ahead of what reached Kafka: on a
restart with the same data directory Faust reads the changelogs only from the last offset it saw
acknowledged and keeps the rest of the local values, so a window can be marked as emitted whose total
was never sent (seen: a ROI window missing after a SIGKILL in tests/integration/test_restart_exactness.py).

As Kafka Streams does with its checkpoint file, the worker marks its data directory while it runs and
removes the mark only after a clean stop (exit code 0: Faust has flushed the producer). A worker that
finds the mark discards the local tables before Faust opens them and restores them from the
changelogs, which never run ahead of the outputs sent before them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)
MARK = ".worker-running"


def claim(appdir: Path, tabledir: Path) -> bool:
    """Mark ``appdir`` as in use; returns True if local tables were discarded (unclean last stop)."""
    appdir.mkdir(parents=True, exist_ok=True)
    mark = appdir / MARK
    discarded = False
    if mark.exists():
        previous = mark.read_text(encoding="utf-8", errors="replace").strip() or "?"
        if tabledir.exists():
            shutil.rmtree(tabledir)
            discarded = True
        logger.warning(
            "the last worker on %s (pid %s) did not stop cleanly: local table state %s; "
            "tables are restored from their changelog topics",
            appdir,
            previous,
            "discarded" if discarded else "was empty",
        )
    mark.write_text(str(os.getpid()), encoding="utf-8")
    return discarded


def release(appdir: Path) -> None:
    """Remove the mark after a clean stop."""
    (appdir / MARK).unlink(missing_ok=True)


def run_guarded(appdir: Path, tabledir: Path, run: Callable[[], object]) -> None:
    """``claim``, then ``run()`` (the worker, which ends with SystemExit), then ``release`` on exit 0."""
    claim(appdir, tabledir)
    try:
        run()
    except SystemExit as exc:
        if exc.code in (0, None):
            release(appdir)
        raise
    release(appdir)
