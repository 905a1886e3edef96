"""The shared step of the ``faust_*`` fix modules: put our function in place of a Faust method, once."""

from __future__ import annotations

from typing import Any


def wrap(owner: type, name: str, replacement: Any, originals: dict[str, Any]) -> None:
    """``owner.name = replacement``, keeping the method it replaces in ``originals[name]``.

    Idempotent: a second call (a second app in one process) leaves the first original in place.
    """
    current = getattr(owner, name)
    if current is replacement:
        return
    originals[name] = current
    setattr(owner, name, replacement)
