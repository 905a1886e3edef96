"""GET /dashboard/ in, the HTML dashboard and its static files (``web/static``, no vendored code) out.

The page is plain HTML, CSS and JavaScript drawing its own SVG charts from the ``/finops/...``
JSON endpoints; nothing is fetched from the internet. Files are read once from the package.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources

from faust.web import Request, Response, View

from finops_app.context import Context

logger = logging.getLogger(__name__)

STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
REFRESH_MS = 5000


@cache
def asset(name: str) -> str:
    """The text of ``web/static/<name>``."""
    return resources.files("finops_app.web").joinpath("static", name).read_text(encoding="utf-8")


def page(read_only: bool, refresh_ms: int = REFRESH_MS) -> str:
    html = asset("dashboard.html")
    return html.replace("{{READ_ONLY}}", "true" if read_only else "false").replace(
        "{{REFRESH_MS}}", str(refresh_ms)
    )


def register(ctx: Context) -> None:
    app = ctx.app
    read_only = ctx.settings.dashboard_read_only
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    @app.page("/dashboard/")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            csp = (
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "connect-src 'self'; frame-ancestors 'none'"
            )
            return self.html(page(read_only), headers={**headers, "Content-Security-Policy": csp})

    @app.page("/dashboard")
    class DashboardRedirect(View):
        async def get(self, request: Request) -> Response:
            return self.text("see /dashboard/", status=301, headers={"Location": "/dashboard/"})

    @app.page("/dashboard/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            content_type = STATIC.get(name)
            if content_type is None:
                return self.json({"error": f"no such file: {name}"}, status=404)
            return self.text(asset(name), content_type=content_type, headers=headers)
