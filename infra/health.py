"""What this process's components last saw of their dependencies, for ``/readyz`` and logs.

Each long-running part reports under its own name (``relay.kafka``, ``relay.database``,
``leadership.relay`` ...) whether its last contact worked, and a short reason when not — an exception's
type name or a state, never a value from outside. ``/readyz`` is ready only while every report is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from infra import metrics


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    detail: str


_reports: dict[str, Report] = {}


def report(component: str, ok: bool, detail: str = "ok") -> None:
    _reports[component] = Report(ok, detail)
    metrics.COMPONENT_UP.labels(component).set(1 if ok else 0)


def forget(component: str) -> None:
    """The component stopped (a clean shutdown): it no longer counts for readiness."""
    _reports.pop(component, None)
    with contextlib.suppress(KeyError):  # never reported
        metrics.COMPONENT_UP.remove(component)


def snapshot() -> dict[str, Report]:
    return dict(_reports)


def failing() -> dict[str, str]:
    return {name: r.detail for name, r in _reports.items() if not r.ok}
