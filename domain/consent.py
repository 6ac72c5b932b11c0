"""Consent rules (同意): who may see what about a person, decided from their consent records alone.

A person may hold several consent records (``consent_id``), each with versions. Rules:

1. Within one ``consent_id`` the highest ``version`` wins; a lower or equal version arriving later is
   ignored (late or redelivered events never roll consent back).
2. Across records, the one signed last (``signed_at``, then version) is the person's effective consent.
   Signing a fresh form after a withdrawal is how a person re-consents.
3. A withdrawn record grants nothing. A record grants ``scope`` to ``recipient`` on ``day`` only if the
   scope is listed, the recipient is listed, and ``valid_from <= day <= valid_until`` (open-ended when
   ``valid_until`` is absent).
4. Scopes: ``share_registration`` lets the recipient see registration data including personal fields
   and links the Hello Work job seeker number with the authority case number; ``disclose_placement``
   lets the authority see placement name and employer (the feed's individual list);
   ``retention_support`` lets the authority see retention checkpoints for 定着支援 (follow-up).
5. Aggregate counts need no consent; nothing else that identifies a person crosses sides without it.
6. A withdrawal is final (P7 in ``domain.provenance``): no record signed at or before the person's latest
   withdrawal grants anything, whatever arrives later — a record signed earlier, or a higher version of
   the withdrawn record itself (which replaces the withdrawn version, so the withdrawal's instant is
   kept apart as the person's *withdrawal fence*).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple


class Scope(StrEnum):
    SHARE_REGISTRATION = "share_registration"
    DISCLOSE_PLACEMENT = "disclose_placement"
    RETENTION_SUPPORT = "retention_support"


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: str  # "authority" | "office"
    code: str


class ConsentRecord(NamedTuple):
    """One consent record's latest version. A named tuple, not a frozen dataclass: consumers build one per
    consent event and per record loaded for every person of every batch, and a frozen dataclass sets each
    field through ``object.__setattr__`` (several times the cost of the tuple)."""

    consent_id: str
    version: int
    withdrawn: bool
    scopes: frozenset[Scope]
    recipients: frozenset[Recipient]
    valid_from: date
    valid_until: date | None
    signed_at: datetime

    def grants(self, scope: Scope, recipient: Recipient, day: date) -> bool:
        if self.withdrawn or scope not in self.scopes or recipient not in self.recipients:
            return False
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


def supersedes(incoming: ConsentRecord, current: ConsentRecord | None) -> bool:
    """Rule 1: does ``incoming`` replace ``current`` (same consent id)?"""
    return current is None or incoming.version > current.version


def fence(records: Iterable[ConsentRecord], known: datetime | None = None) -> datetime | None:
    """Rule 6: the person's withdrawal fence — the latest withdrawal's ``signed_at`` among ``records`` and
    the fence ``known`` from before (withdrawn versions since replaced by a higher one)."""
    latest = max((r.signed_at for r in records if r.withdrawn), default=None)
    if known is None or (latest is not None and latest > known):
        return latest
    return known


class PersonConsent(NamedTuple):
    """A consent record as a consumer keeps it: whose it is and which event carried this version (a named
    tuple, as ``ConsentRecord``)."""

    person_key: str
    event_id: str
    record: ConsentRecord


ConsentKey = tuple[str, str]  # (person_key, consent_id): a record id never crosses people (P8)


def newest_versions(
    incoming: Iterable[PersonConsent], stored: Mapping[ConsentKey, int]
) -> list[PersonConsent]:
    """Rule 1 over a batch: per person and ``consent_id`` the highest version, and only where it replaces
    the version already kept (``stored``: (person, consent id) → version). Keyed by the person too (P8 in
    ``domain.provenance``): another person's record under the same id never replaces this one's. What every
    consumer writes to its consent store."""
    latest: dict[ConsentKey, PersonConsent] = {}
    for c in incoming:
        key = (c.person_key, c.record.consent_id)
        held = latest.get(key)
        if supersedes(c.record, held.record if held else None):
            latest[key] = c
    return [c for key, c in latest.items() if key not in stored or c.record.version > stored[key]]


def effective(records: Iterable[ConsentRecord], fenced_at: datetime | None = None) -> ConsentRecord | None:
    """Rules 2 and 6: the person's effective consent among their (latest-version) records; ``fenced_at`` is
    the withdrawal fence kept from earlier withdrawals. A record signed at or before the fence is dead:
    ``None`` then, as for a person who never consented."""
    # ``fence`` and ``max(records, key=(signed_at, version))`` in one pass: the shared view asks this for
    # every person of every batch.
    wall = None
    current: ConsentRecord | None = None
    for r in records:
        if r.withdrawn and (wall is None or r.signed_at > wall):
            wall = r.signed_at
        if current is None or (r.signed_at, r.version) > (current.signed_at, current.version):
            current = r
    if fenced_at is not None and (wall is None or fenced_at >= wall):
        wall = fenced_at
    # At or before (rule 6): a record signed at the withdrawal's very instant grants nothing either, whatever
    # its version, as the shared view's reads decide it (``decide_disclosure``).
    if current is not None and wall is not None and current.signed_at <= wall and not current.withdrawn:
        return None  # the fence stands: a withdrawal's, or one whose record a higher version replaced
    return current


def permits(
    records: Iterable[ConsentRecord],
    scope: Scope,
    recipient: Recipient,
    day: date,
    fenced_at: datetime | None = None,
) -> bool:
    """Rules 2–3 and 6 together: may ``recipient`` see what ``scope`` covers about this person on ``day``?"""
    current = effective(records, fenced_at)
    return current is not None and current.grants(scope, recipient, day)


def consent_record(data: Mapping[str, Any]) -> ConsentRecord:
    """A consent event's data (the contract's JSON form) as a ``ConsentRecord``."""
    until = data.get("valid_until")
    # Positionally, in ``ConsentRecord``'s field order, and the recipients' pairs by a list comprehension:
    # the shared view reads one per consent event of every batch.
    return ConsentRecord(
        data["consent_id"],
        int(data["version"]),
        data["action"] == "withdrawn",
        scope_set(tuple(data.get("scopes", ()))),
        recipient_set(tuple([(r["kind"], r["code"]) for r in data.get("recipients", ())])),
        _date(data["valid_from"]),
        _date(until) if until else None,
        _instant(data["captured"]["signed_at"]),
    )


# Few distinct scope and recipient sets exist (one per site, roughly): each is built once, not per event.
@lru_cache(maxsize=4096)
def scope_set(scopes: tuple[str, ...]) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in scopes)


@lru_cache(maxsize=4096)
def recipient_set(recipients: tuple[tuple[str, str], ...]) -> frozenset[Recipient]:
    return frozenset(Recipient(kind, code) for kind, code in recipients)


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _instant(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
