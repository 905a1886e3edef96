"""``python -m finops_app`` and the ``finops`` console script: the app's Faust CLI."""

from __future__ import annotations

import sys

from finops_app.errors import ConfigError


def main() -> None:
    try:
        from finops_app.app import main as app_main
    except ConfigError as exc:
        sys.stderr.write(f"finops: {exc}\n")
        sys.exit(2)
    app_main()


if __name__ == "__main__":
    main()
