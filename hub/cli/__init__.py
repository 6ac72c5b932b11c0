"""The ``hub`` command: the composition root. Nothing imports this package."""

from hub.cli.main import app

__all__ = ["app"]
