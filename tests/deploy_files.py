"""Reading deploy/: the alert rules and the Grafana dashboard, their PromQL and the metrics it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import promql_parser
import yaml

from infra.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "ittai-hub.json"


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    board: dict[str, Any] = orjson.loads(path.read_bytes())
    return board


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and every dashboard target."""
    out = [
        (f"rule {r.get('alert') or r.get('record')}", str(r["expr"]))
        for g in rule_groups()
        for r in g["rules"]
    ]
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    return out


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (parsed, not pattern-matched)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
