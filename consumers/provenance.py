"""The consumers' own provenance check (``domain.provenance.check_source``): a record is not trusted
because it is on the topic. Every consumer calls it first in every batch (the shared view and the
placement feed after taking out the erasures, whose source ``erasures_in`` checks by the same function;
the event log on the whole batch); an event whose ``ce_source`` does not own the codes in its data, or an
erasure not from the hub's operator side (P9), is rejected, so the runtime dead-letters it alone (the
reason names the field and the rule) and the batch goes on without it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumers.runtime import Consumed, HandlerRejected
from contracts.envelope import Family
from domain.provenance import Refusal, check_erasure_source, check_source

# What each kind of data carries of ``check_source``'s fields (authority, office), by the data's type:
# asked once per type, as a missing attribute costs an exception per event (``getattr``'s default), and
# found on the data itself, so a field a contract gains is checked without a change here.
_CARRIES: dict[type, tuple[bool, bool]] = {}
# The combinations (source, family, site, authority, office, capture side) that passed: a few per
# organisation and site, recurring across a stream; none is personal. Bounded like the wire memos.
_PASSED: set[tuple[Any, ...]] = set()
_PASSED_MAX = 8192
# The members compared per event, bound once: on Python 3.11 an attribute of an enum class costs a Python
# ``__getattr__`` hook on its metaclass (~100 ns, as much as the rest of this check).
_CONSENT, _ERASURE = Family.CONSENT, Family.ERASURE


def check_sources(batch: Sequence[Consumed]) -> None:
    """Raise ``HandlerRejected`` for the first event of ``batch`` whose ``ce_source`` does not own what
    its data says (an erasure: that is not the hub's operator side, P9). One loop, no call per event that
    passed: every consumer runs it over every event."""
    passed = _PASSED
    for consumed in batch:
        event = consumed.event
        data, family = event.data, event.family
        if family is _CONSENT:
            captured = data.captured
            seen: tuple[Any, ...] = (event.source, family, captured.site, None, None, captured.side)
        elif family is _ERASURE:
            seen = (event.source, family, None, None, None, None)
        else:
            carries = _CARRIES.get(type(data))
            if carries is None:
                carries = _CARRIES[type(data)] = (hasattr(data, "authority"), hasattr(data, "office"))
            seen = (
                event.source,
                family,
                data.site,
                data.authority if carries[0] else None,
                data.office if carries[1] else None,
                None,
            )
        if seen not in passed:
            _check(seen)


def _check(seen: tuple[Any, ...]) -> None:
    source, family, site, authority, office, side = seen
    try:
        if family is _ERASURE:
            check_erasure_source(source)
        else:
            check_source(
                source,
                family.value,
                site=str(site),
                authority=authority,
                office=office,
                capture_side=None if side is None else str(side),
            )
    except Refusal as refusal:
        raise HandlerRejected(f"ce_source re-checked against the data: {refusal.reason}") from None
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED.add(seen)
