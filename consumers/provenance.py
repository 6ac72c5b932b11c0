"""The consumers' own provenance check (``domain.provenance.check_source``): a record is not trusted
because it is on the topic. The shared view and the placement feed call it first in every batch; an
event whose ``ce_source`` does not own the codes in its data is rejected, so the runtime dead-letters it
alone (the reason names the field and the rule) and the batch goes on without it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumers.runtime import Consumed, HandlerRejected
from contracts.envelope import Event, Family
from domain.provenance import Refusal, check_source


def check_sources(batch: Sequence[Consumed]) -> None:
    """Raise ``HandlerRejected`` for the first event of ``batch`` its source does not own."""
    for consumed in batch:
        check_event_source(consumed.event)


def check_event_source(event: Event[Any]) -> None:
    data = event.data
    consent = event.family is Family.CONSENT
    try:
        check_source(
            event.source,
            event.family.value,
            site=str(data.captured.site if consent else data.site),
            authority=getattr(data, "authority", None),
            office=getattr(data, "office", None),
            capture_side=str(data.captured.side) if consent else None,
        )
    except Refusal as refusal:
        raise HandlerRejected(f"ce_source re-checked against the data: {refusal.reason}") from None
