"""Generate the committed contract files from the models, and check them.

* ``contracts/schemas/<family>.v1.json``: JSON Schema (2020-12) of each event's data, with the
  CloudEvents attributes it travels with under ``x-cloudevents``;
* ``contracts/asyncapi.json``: AsyncAPI 3.0 for the whole hub, produced by FastStream's AsyncAPI
  generator from publisher declarations (so the document and the models cannot disagree), with the
  CloudEvents binary-mode headers added to every message.

``check_all`` reports drift (committed files differ from the models) and breaking changes (the models
would break a consumer of the committed version), see ``contracts.compat``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from contracts.compat import breaking_changes
from contracts.envelope import (
    DEADLETTER_TOPIC,
    FEED_TOPIC,
    ID_PATTERN,
    MODELS,
    SOURCE_PATTERN,
    SPECVERSION,
    TOPICS,
    TRACEPARENT_HEADER,
    TRACEPARENT_PATTERN,
    TRACESTATE_HEADER,
    TRACESTATE_PATTERN,
    Family,
    event_type,
)
from contracts.feed import FEED_EVENT_TYPE, FEED_SOURCE, FeedRevision
from contracts.types import INSTANT_PATTERN
from domain.trace_context import TRACESTATE_MAX_BYTES, TRACESTATE_MAX_MEMBERS

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE / "schemas"
ASYNCAPI_PATH = HERE / "asyncapi.json"
SCHEMA_BASE_ID = "https://ittai-hub.example/contracts/schemas/"

PUBLISHED_BY = {
    Family.REGISTRATION: "employment system adapter (Hello Work, joint reception)",
    Family.CONSENT: "either adapter, where the consent was signed",
    Family.REFERRAL: "welfare system adapter (authority)",
    Family.PLACEMENT: "employment system adapter (Hello Work)",
    Family.RETENTION: "either adapter",
    Family.ERASURE: "the hub's operator side (hub erase; ce_source /hub/operator), never a client",
}

CE_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0, Kafka protocol binding, binary content mode",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time"],
    "properties": {
        "ce_specversion": {"const": SPECVERSION},
        "ce_id": {"type": "string", "pattern": ID_PATTERN, "description": "Event id, unique per source"},
        "ce_source": {
            "type": "string",
            "pattern": SOURCE_PATTERN,
            "examples": ["/authorities/131041", "/hellowork/offices/1301", "/hub/operator"],
        },
        "ce_type": {"type": "string", "description": "jp.ittai.<family>.v<major>"},
        "ce_subject": {"type": "string", "description": "Pseudonymous person key (also the Kafka key)"},
        "ce_time": {"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN},
        "content-type": {"const": "application/json"},
        TRACEPARENT_HEADER: {
            "type": "string",
            "pattern": TRACEPARENT_PATTERN,
            "description": "Optional. CloudEvents distributed-tracing extension: the W3C trace context of "
            "the request that accepted the event. A malformed one is dropped (the event is processed, untraced)",
        },
        TRACESTATE_HEADER: {
            "type": "string",
            "maxLength": TRACESTATE_MAX_BYTES,
            "pattern": TRACESTATE_PATTERN,
            "description": "Optional, only beside ce_traceparent. CloudEvents distributed-tracing extension: "
            f"the W3C tracestate (vendors' key=value list-members, at most {TRACESTATE_MAX_MEMBERS}, keys "
            "unique). A malformed one, or one without a well-formed ce_traceparent, is dropped (the event "
            "is processed with its traceparent only)",
        },
    },
}


def schema_path(family: Family) -> Path:
    return SCHEMA_DIR / f"{family.value}.v1.json"


FEED_SCHEMA_PATH = SCHEMA_DIR / "feed.v1.json"


def feed_schema() -> dict[str, Any]:
    """The feed topic's record: one revision of an authority's monthly placement feed (aggregates)."""
    schema = FeedRevision.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE_ID}feed.v1.json",
        **schema,
        "x-cloudevents": {
            "type": FEED_EVENT_TYPE,
            "source": FEED_SOURCE,
            "topic": FEED_TOPIC,
            "key": "<authority>:<month> (also ce_subject)",
            "contentMode": "binary",
            "publishedBy": "placement feed builder (hub run placement-feed)",
        },
    }


def event_schema(family: Family) -> dict[str, Any]:
    schema = MODELS[family].model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE_ID}{family.value}.v1.json",
        **schema,
        "x-cloudevents": {
            "type": event_type(family),
            "topic": TOPICS[family],
            "key": "person_key",
            "contentMode": "binary",
            "publishedBy": PUBLISHED_BY[family],
        },
    }


def asyncapi_document() -> dict[str, Any]:
    broker = KafkaBroker("127.0.0.1:19092", description="Ittai Hub Kafka cluster")
    for family, model in MODELS.items():
        broker.publisher(
            TOPICS[family],
            title=f"{TOPICS[family]}:Publish",
            description=f"{family.value} events; published by: {PUBLISHED_BY[family]}; Kafka key = person key",
            schema=model,
        )
    broker.publisher(
        FEED_TOPIC,
        title=f"{FEED_TOPIC}:Publish",
        description="Monthly placement feed revisions per authority (aggregates only, with disclosure control); "
        "Kafka key and ce_subject = <authority>:<month>; for authority systems to subscribe to",
        schema=FeedRevision,
    )
    broker.publisher(
        DEADLETTER_TOPIC,
        title=f"{DEADLETTER_TOPIC}:Publish",
        description="Poison messages, byte for byte, with dlq_reason / dlq_source_* / dlq_time headers",
    )
    spec = AsyncAPI(
        broker,
        title="Ittai Hub",
        version="1.0.0",
        description="Events between local authorities' welfare systems and Hello Work (一体的実施事業).",
        schema_version="3.0.0",
    ).to_specification()
    doc: dict[str, Any] = json.loads(spec.to_json())
    for message in doc.get("components", {}).get("messages", {}).values():
        message["headers"] = CE_HEADERS
    return doc


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[Path, str]:
    files = {schema_path(f): _dump(event_schema(f)) for f in Family}
    files[FEED_SCHEMA_PATH] = _dump(feed_schema())
    files[ASYNCAPI_PATH] = _dump(asyncapi_document())
    return files


def write_all() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_all() -> list[str]:
    problems: list[str] = []
    for path, text in rendered().items():
        if not path.exists():
            problems.append(f"{path.relative_to(HERE.parent)}: missing; run `hub contracts generate`")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(
                f"{path.relative_to(HERE.parent)}: drifted from the models; run `hub contracts generate`"
            )
    current = {schema_path(f): (f.value, event_schema(f)) for f in Family}
    current[FEED_SCHEMA_PATH] = ("feed", feed_schema())
    for path, (name, schema) in current.items():
        if path.exists():
            committed = json.loads(path.read_text(encoding="utf-8"))
            for change in breaking_changes(committed, schema):
                problems.append(f"{name}: breaking change: {change}")
    return problems
