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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum


class Scope(StrEnum):
    SHARE_REGISTRATION = "share_registration"
    DISCLOSE_PLACEMENT = "disclose_placement"
    RETENTION_SUPPORT = "retention_support"


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: str  # "authority" | "office"
    code: str


@dataclass(frozen=True, slots=True)
class ConsentRecord:
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


def effective(records: Iterable[ConsentRecord]) -> ConsentRecord | None:
    """Rule 2: the person's effective consent among their (latest-version) records."""
    return max(records, key=lambda r: (r.signed_at, r.version), default=None)


def permits(records: Iterable[ConsentRecord], scope: Scope, recipient: Recipient, day: date) -> bool:
    """Rules 2–3 together: may ``recipient`` see what ``scope`` covers about this person on ``day``?"""
    current = effective(records)
    return current is not None and current.grants(scope, recipient, day)


def granted_scopes(records: Iterable[ConsentRecord], recipient: Recipient, day: date) -> frozenset[Scope]:
    current = effective(records)
    if current is None:
        return frozenset()
    return frozenset(s for s in Scope if current.grants(s, recipient, day))
