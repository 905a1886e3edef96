"""The dashboard's files ship with the package, reference nothing outside this server, and the query
parameters of the list views are checked before use."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from finops_app.web import dashboard, views


def test_page_fills_in_read_only_and_refresh() -> None:
    html = dashboard.page(read_only=True, refresh_ms=3000)
    assert 'data-read-only="true"' in html and 'data-refresh-ms="3000"' in html
    assert "{{" not in dashboard.page(read_only=False)


def test_every_asset_the_page_loads_is_served_and_local() -> None:
    html = dashboard.page(read_only=True)
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded, "the page loads its script and stylesheet"
    for url in loaded:
        if url.startswith("data:"):
            continue
        assert url.startswith("/dashboard/static/"), url
        assert url.rsplit("/", 1)[1] in dashboard.STATIC
    for name in dashboard.STATIC:
        text = dashboard.asset(name)
        # the SVG namespace is an identifier, not a download
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


def test_the_script_never_parses_data_as_html() -> None:
    script = dashboard.asset("dashboard.js")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


def request(**query: str) -> SimpleNamespace:
    return SimpleNamespace(query=query)


def test_limit_and_hours_are_validated() -> None:
    assert views._limit(request()) == 100
    assert views._limit(request(limit="5")) == 5
    for bad in ("0", "-1", "abc", "100000"):
        with pytest.raises(views.BadQuery, match="limit"):
            views._limit(request(limit=bad))
    assert views._hours(request(hours="1.5"), 48 * 3_600_000) == 1.5
    for bad in ("0", "-2", "x", "49"):
        with pytest.raises(views.BadQuery, match="hours"):
            views._hours(request(hours=bad), 48 * 3_600_000)
