"""Regenerate the settings table in README.md from finops_app.config (between the markers)."""

from __future__ import annotations

import re
from pathlib import Path

from finops_app.config import settings_table

README = Path(__file__).resolve().parent.parent / "README.md"


def table() -> str:
    lines = ["| variable | group | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {g} | `{d}` | {doc} |" for n, g, d, doc in settings_table()]
    return "\n".join(lines)


def main() -> None:
    text = README.read_text()
    new = re.sub(
        r"(<!-- settings:start -->\n)(?:.*?\n)?(<!-- settings:end -->)",
        lambda m: m.group(1) + table() + "\n" + m.group(2),
        text,
        flags=re.S,
    )
    README.write_text(new)


if __name__ == "__main__":
    main()
