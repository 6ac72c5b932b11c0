"""Data-sharing agreements (個人情報保護協定): the second key to every disclosure. Pure rules.

Each joint site runs under an agreement between the prefectural labour bureau chief (労働局長, for the
Hello Work offices of the prefecture) and the head of the authority (首長), stating the purposes, the data
shared and how it is managed; about 12% of sites share no data at all. So personal data crosses sides
only when **both** hold (A1–A4 are cited from code):

A1 the person's consent grants the purpose to the recipient (``domain.consent``), and
A2 an agreement in force on the day of the disclosure covers that purpose between the authority and the
   Hello Work office concerned (the office that registered or placed the person), and
A3 if the agreement lists sites, the data comes from one of them (no list: every site of the authority).
A4 No agreement: statistics still flow (counts need no consent and no agreement), personal fields do not.

An agreement is in force from ``valid_from`` to ``valid_until`` inclusive (open-ended without it); ending
one (``hub agreements end``) sets ``valid_until``, so a disclosure after that day is refused at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from domain.consent import ConsentRecord, Recipient, Scope, permits


@dataclass(frozen=True, slots=True)
class Agreement:
    agreement_id: str
    authority: str
    offices: frozenset[str]
    sites: frozenset[str]  # empty: every site of the authority
    purposes: frozenset[Scope]
    valid_from: date
    valid_until: date | None

    def in_force(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)

    def covers(self, purpose: Scope, authority: str, office: str, site: str | None, day: date) -> bool:
        """A2–A3 for one agreement."""
        return (
            self.in_force(day)
            and purpose in self.purposes
            and authority == self.authority
            and office in self.offices
            and (not self.sites or site in self.sites)
        )


def covered(
    agreements: Iterable[Agreement],
    purpose: Scope,
    *,
    authority: str | None,
    office: str | None,
    site: str | None,
    day: date,
) -> bool:
    """A2: does an agreement in force on ``day`` cover ``purpose`` between ``authority`` and ``office`` for
    data from ``site``? Without both parties known there is nothing an agreement could cover."""
    if authority is None or office is None:
        return False
    return any(a.covers(purpose, authority, office, site, day) for a in agreements)


def refusal(purpose: Scope, authority: str | None, office: str | None) -> str:
    """The reason a disclosure is refused for want of an agreement (codes only, never a personal value)."""
    return (
        f"A2: no data-sharing agreement (個人情報保護協定) in force covers purpose '{purpose.value}' between "
        f"authority {authority or '?'} and office {office or '?'}"
    )


@dataclass(frozen=True, slots=True)
class Registers:
    """What the registers say about the people of one disclosure, loaded before it is decided: whom the
    recipient holds (P3 in ``domain.provenance``), each person's withdrawal fence (P7), the agreements that
    could cover it (A2), and the day (JST) it happens on."""

    held: frozenset[str]
    fences: Mapping[str, datetime]
    agreements: tuple[Agreement, ...]
    today: date


class Withheld(StrEnum):
    """Why a disclosure about one person does not happen (counted, never itemised)."""

    NO_CONSENT = "no_consent"  # not held (P3), behind the fence (P7) or no consent grants it (A1)
    NO_AGREEMENT = "no_agreement"  # consented, but no agreement in force covers it (A2–A3)


def withheld(
    person_key: str,
    consents: Iterable[ConsentRecord],
    registers: Registers,
    purpose: Scope,
    *,
    recipient: Recipient,
    authority: str | None,
    office: str | None,
    site: str | None,
    on: date,
) -> Withheld | None:
    """P3, P7, A1 and A2–A3 for disclosing ``purpose`` about one person to ``recipient``: ``None`` when it
    may happen, else why not. The consent must grant it on the day of the fact (``on``) and on the day of
    the disclosure, so a withdrawal or an expiry takes effect at once."""
    fence = registers.fences.get(person_key)
    records = list(consents)
    if person_key not in registers.held or not (
        permits(records, purpose, recipient, on, fence)
        and permits(records, purpose, recipient, registers.today, fence)
    ):
        return Withheld.NO_CONSENT
    if not covered(
        registers.agreements, purpose, authority=authority, office=office, site=site, day=registers.today
    ):
        return Withheld.NO_AGREEMENT
    return None
