"""CLI commands of this component, registered on the ``hub`` app by ``hub.cli``."""

from __future__ import annotations

import typer


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: top-level ones on ``app``, services on ``run_app`` (``hub run X``)."""
