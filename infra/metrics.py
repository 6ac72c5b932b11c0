"""Prometheus metrics shared by the hub's components. Labels never carry personal data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter("ittai_events_consumed_total", "Records consumed", ["consumer"])
DEAD_LETTERS = Counter("ittai_dead_letters_total", "Records dead-lettered", ["consumer", "reason"])
TRANSIENT_RETRIES = Counter(
    "ittai_transient_retries_total", "Retries after transient failures", ["component"]
)
BATCH_SECONDS = Histogram(
    "ittai_batch_seconds",
    "Time to process one batch",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_PUBLISHED = Counter("ittai_outbox_published_total", "Outbox rows published to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("ittai_outbox_backlog", "Outbox rows accepted and not yet published")
EVENTS_ACCEPTED = Counter(
    "ittai_events_accepted_total", "Events accepted into the outbox", ["origin", "family"]
)
LEADERSHIP = Gauge("ittai_leadership", "1 while this process leads the single-writer role", ["role"])
COMPONENT_UP = Gauge(
    "ittai_component_up", "1 while the component's last contact with its dependency worked", ["component"]
)
