"""The ``hub`` command: the composition root. Nothing imports this package.

``app`` is loaded on first use (``__main__`` installs the service's SIGTERM handling before that)."""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from hub.cli.main import app

        return app
    raise AttributeError(name)
