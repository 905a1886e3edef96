"""After an unclean stop the local tables are discarded (restored from changelogs); after a clean one kept."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from finops_app import local_state


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    appdir = tmp_path / "v1"
    tabledir = appdir / "tables"
    (tabledir / "unit_state-0.db").mkdir(parents=True)
    (tabledir / "unit_state-0.db" / "CURRENT").write_text("x")
    return appdir, tabledir


def test_clean_stop_keeps_local_tables(tmp_path: Path) -> None:
    appdir, tabledir = _dirs(tmp_path)
    with pytest.raises(SystemExit):
        local_state.run_guarded(appdir, tabledir, lambda: sys.exit(0))
    assert not (appdir / local_state.MARK).exists()
    assert local_state.claim(appdir, tabledir) is False
    assert (tabledir / "unit_state-0.db" / "CURRENT").exists()


def test_a_killed_worker_leaves_the_mark_and_the_next_start_discards_local_tables(tmp_path: Path) -> None:
    appdir, tabledir = _dirs(tmp_path)
    assert local_state.claim(appdir, tabledir) is False  # the worker runs ... and is SIGKILLed
    assert (appdir / local_state.MARK).exists()
    assert local_state.claim(appdir, tabledir) is True  # the next start
    assert not tabledir.exists()
    assert (appdir / local_state.MARK).exists()  # the new worker holds it


def test_a_failed_worker_keeps_the_mark(tmp_path: Path) -> None:
    appdir, tabledir = _dirs(tmp_path)

    def crash() -> None:
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        local_state.run_guarded(appdir, tabledir, crash)
    assert (appdir / local_state.MARK).exists()
    with pytest.raises(RuntimeError):
        local_state.run_guarded(appdir, tabledir, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert (appdir / local_state.MARK).exists()
    assert not tabledir.exists()
