"""The consumers' ``ce_source`` re-check (``consumers.provenance.check_sources``) gives the domain rule's
verdict (``domain.provenance.check_source``, ``check_erasure_source``) for every event, also when a
verdict comes from its memo of combinations that passed: every family under every kind of source, each
asked in a fresh memo, again from the memo, and in the reverse order (so a combination that passed
before another is asked never decides that other's verdict)."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from consumers import provenance
from consumers.runtime import Consumed, HandlerRejected
from contracts.envelope import Event, Family, decode, encode
from domain.provenance import Refusal, check_erasure_source, check_source
from producers.submission import to_event
from tests import factories

SOURCES = [
    "/authorities/131041",  # the factories' authority
    "/authorities/112038",  # another authority
    "/hellowork/offices/1301",  # the factories' office
    "/hellowork/offices/1102",  # another office
    "/hellowork/national",
    "/hub/operator",
    "/somewhere/else",
]


def _events() -> list[Event[Any]]:
    pk = factories.person_key()
    other = {"site": "112038-01", "authority": "112038"}
    captured = {"side": "authority", "site": "112038-01", "channel": "paper_form",
                "signed_at": "2025-04-03T10:00:00+09:00"}  # fmt: skip
    subs = [
        *factories.one_of_each(pk),
        factories.registration(pk, office="1102", **other),
        factories.referral(pk, **other),
        factories.placement(pk, office="1102", site="112038-01"),
        factories.retention(pk, os.urandom(16).hex(), site="112038-01"),
        factories.consent(pk, captured=captured),
        factories.erasure(pk),
    ]
    events = []
    for sub in subs:
        key, headers, value = encode(to_event(sub, None if sub.family is Family.ERASURE else os.urandom(32)))
        events.append(decode(key, headers, value, fast=True))
    return events


def _rule(event: Event[Any]) -> str | None:
    """The domain rule's refusal of ``event``, from the event's JSON (not the decoded struct), or None."""
    data = orjson.loads(encode(event)[2])
    try:
        if event.family is Family.ERASURE:
            check_erasure_source(event.source)
        elif event.family is Family.CONSENT:
            check_source(
                event.source,
                "consent",
                site=data["captured"]["site"],
                capture_side=data["captured"]["side"],
            )
        else:
            check_source(
                event.source,
                event.family.value,
                site=data["site"],
                authority=data.get("authority"),
                office=data.get("office"),
            )
    except Refusal as refusal:
        return refusal.reason
    return None


def _verdict(event: Event[Any]) -> str | None:
    try:
        provenance.check_sources([Consumed(event, "topic", 0, 0, b"")])
    except HandlerRejected as rejected:
        return rejected.reason
    return None


def test_every_family_under_every_source_gets_the_domain_rules_verdict_memo_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = [event._replace(source=source) for event in _events() for source in SOURCES]
    expected = {id(e): _rule(e) for e in cases}
    assert sum(v is None for v in expected.values()) >= 10  # both verdicts, many times each
    assert sum(v is not None for v in expected.values()) >= 40
    for order in (cases, cases[::-1]):
        monkeypatch.setattr(provenance, "_PASSED", set())
        for _ in range(2):  # the second time, every passing verdict comes from the memo
            for event in order:
                want = expected[id(event)]
                got = _verdict(event)
                assert got == (None if want is None else f"ce_source re-checked against the data: {want}"), (
                    event.family,
                    event.source,
                )
