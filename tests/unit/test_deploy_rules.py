"""deploy/ checked as `promtool check rules` would (structure, durations, templates) with every
expression parsed by a PromQL parser; the dashboard's queries parsed too."""

from __future__ import annotations

import re

import promql_parser
import pytest

from tests.deploy_files import dashboard, expressions, metric_names, rule_groups

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
WATCHED = {  # what the issue asks the alerts to watch → a metric its rules must use
    "consumer lag": "ittai_consumer_lag",
    "outbox age": "ittai_outbox_oldest_pending_age_seconds",
    "dead letters": "ittai_dead_letters_open",
    "withdrawal → removal latency": "ittai_withdrawal_removal_seconds",
    "feed overdue after the cutoff": "ittai_feed_overdue_seconds_max",
}


def test_rule_files_are_well_formed() -> None:
    groups = rule_groups()
    assert groups and len({g["name"] for g in groups}) == len(groups), "group names must be unique"
    for g in groups:
        assert set(g) <= {"name", "interval", "rules", "limit"}, g["name"]
        assert g["rules"], g["name"]
        for r in g["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert set(r) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, r
            assert NAME.match(r.get("alert") or r.get("record")), r
            if "for" in r:
                assert DURATION.match(str(r["for"])), r["for"]
            for key, value in {**r.get("labels", {}), **r.get("annotations", {})}.items():
                assert NAME.match(key) and isinstance(value, str), (r.get("alert"), key)
                assert value.count("{{") == value.count("}}"), (r.get("alert"), key)
            if "alert" in r:
                assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]


@pytest.mark.parametrize(("where", "expr"), expressions(), ids=lambda v: v if len(v) < 60 else None)
def test_every_expression_parses(where: str, expr: str) -> None:
    promql_parser.parse(expr)
    assert metric_names(expr), where


def test_the_parser_refuses_what_prometheus_would() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (consumer) (ittai_consumer_lag > ")
    with pytest.raises(ValueError):
        promql_parser.parse("rate(ittai_dead_letters_total[10 minutes])")


def test_alerts_cover_what_operators_need() -> None:
    used = set().union(*(metric_names(str(r["expr"])) for g in rule_groups() for r in g["rules"]))
    missing = {what: metric for what, metric in WATCHED.items() if metric not in used}
    assert not missing


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["targets"], panel["title"]
