"""Provenance: who may assert what about a person. Pure rules; the adapters enforce them at the edge and
the consumers again (a record on a topic is not trusted because it is there). Code and SQL cite them as
``P1`` … ``P8``; the README's security section repeats them.

P1 **Codes are ASCII digits.** Local government, office and site codes are ``[0-9]`` only: a full-width
   ``１３１０４１`` would otherwise be a second spelling of one organisation (``domain.codes``).
P2 **Own registered sites.** Every event happens at a joint site (拠点) that is in the sites registry; a
   site in no registry is refused. An authority publishes only at sites it runs, an office only at sites
   registered to its office (the national Hello Work system at any registered site, as that site's
   office). A registration's or placement's ``office`` is the site's registered office.
P3 **Holding comes from the joint reception, not from an event.** The two organisations of a joint site
   (its authority and its office) hold a person once a registration or a referral of that person at
   that site was accepted. A registration or referral of a person already held only by others is
   refused: a person key becomes known to a new organisation only when one of the parties at the
   counter already holds that person (identity linked at the joint reception), never because the
   sender knows the key. (A fresh key is 128 random bits, issued at first contact: an organisation
   that never held the person has no way to know it before it is published.)
P4 **Consent is asserted by whom captured it.** A consent is published by the side that captured it
   (authority → welfare adapter, Hello Work → employment adapter), by that side's organisation of the
   capturing site (P2), for a person that organisation holds (P3).
P5 **Placements and retention only for one's own people.** An authority reports retention only for
   people it holds. An office places (and follows up) people it holds — or people nobody holds yet: a
   registration keyed in late from paper may follow its placement; such an event confers no holding and
   discloses nothing, and once anyone holds the person only holders may publish about them.
P6 **No future, no past before the person.** ``signed_at`` and every event date are no later than now
   plus ``CLOCK_SKEW``; a consent's ``signed_at`` and a placement's or retention's date are no earlier
   than the first registration or referral by which the publisher holds the person.
P7 **A withdrawal is final** against every consent signed at or before it, whatever arrives later
   (a higher version, a record signed before it, a replay): only a consent signed after the latest
   withdrawal can grant anything (``domain.consent``).
P8 **Consents are keyed by (person, consent_id)**: a record id never crosses from one person to another.
P9 **Erasure is final.** Nothing more is accepted about an erased person: it would get a new data key and
   whatever it carries would be readable again. A person who comes back is a new person, with a new
   key issued at the joint reception. An erasure itself (``ittai.erasure.v1``) comes from the hub's
   operator side only (``OPERATOR_SOURCE``): no client publishes one, and a consumer drops what it keeps
   about a person only on an erasure from that source (``check_erasure_source``) that carries the
   operator's signature over what it says (``infra.signing``: a header alone proves nothing).

The consumers re-check what they can see in a record itself (``check_source``): the organisation its
``ce_source`` names must own the codes in its data — an authority its sites and ``authority``, an office
its ``office``, either side only its own families and consents captured on its side (P2, P4). A record
that fails is dead-lettered, whoever managed to write it to the topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from domain.calendar import JST

CLOCK_SKEW = timedelta(minutes=5)


class Side(StrEnum):
    AUTHORITY = "authority"  # 自治体: the welfare adapter
    HELLO_WORK = "hello_work"  # ハローワーク: the employment adapter


@dataclass(frozen=True, slots=True, order=True)
class Org:
    """An organisation as holder: ``authority``/local government code or ``office``/office code."""

    kind: str
    code: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.code}"


@dataclass(frozen=True, slots=True)
class Publisher:
    """Who publishes, as the credential proves it: an authority, an office, or national Hello Work."""

    side: Side
    code: str  # local government code, office code, or "*" for the national Hello Work system


@dataclass(frozen=True, slots=True)
class SiteEntry:
    """A joint site as the registry has it."""

    site_id: str
    authority: str
    office: str

    @property
    def parties(self) -> frozenset[Org]:
        return frozenset({Org("authority", self.authority), Org("office", self.office)})


class Refusal(Exception):
    """A provenance rule refuses the event; ``reason`` names the rule and codes, never a personal value."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule
        self.reason = f"{rule}: {reason}"


# Families that bring a person into the programme at a site (and so establish holding, P3).
INTAKE = frozenset({"registration", "referral"})


def event_site(family: str, data: Mapping[str, Any]) -> str:
    """The joint site an event happened at (every family names one)."""
    if family == "consent":
        return str(data["captured"]["site"])
    return str(data["site"])


def acting_org(publisher: Publisher, family: str, data: Mapping[str, Any], site: SiteEntry | None) -> Org:
    """P2: the organisation the publisher acts as for this event; raises ``Refusal`` otherwise."""
    # Field and rule, no codes: neither what was sent nor what the registry holds goes back.
    where = "captured.site" if family == "consent" else "site"
    if site is None:
        raise Refusal("P2", f"{where}: not in the sites registry (an operator adds it)")
    if publisher.side is Side.AUTHORITY:
        if site.authority != publisher.code:
            raise Refusal("P2", f"{where}: run by another authority than the publisher")
        return Org("authority", publisher.code)
    if publisher.code not in ("*", site.office):
        raise Refusal("P2", f"{where}: registered to another office than the publisher")
    named = data.get("office")
    if named is not None and str(named) != site.office:
        raise Refusal("P2", f"office: not the office the sites registry holds for the {where}")
    return Org("office", site.office)


def check_holding(family: str, org: Org, site: SiteEntry, holders: Mapping[Org, date]) -> None:
    """P3–P5: may ``org`` publish this family about a person held by ``holders`` (org → since)?"""
    if family in INTAKE:
        if not holders:
            return  # first contact: the key is new
        if site.parties & holders.keys():
            return  # identity linked at this joint reception: one party already holds the person
        raise Refusal(
            "P3",
            f"the person is held by other organisations; {org} at site {site.site_id} holds them only "
            "after identity linking at a joint reception where they are held",
        )
    if holders and org in holders:  # most people of a file are held by nobody: no hash of ``org``
        return
    if not holders and family != "consent" and org.kind == "office":
        return  # P5: a late registration's placement or follow-up; it makes no one a holder
    rule = "P4" if family == "consent" else "P5"
    raise Refusal(rule, f"{org} holds no registration or referral of this person")


def check_times(family: str, data: Mapping[str, Any], now: datetime, held_since: date | None = None) -> None:
    """P6: nothing dated after now + ``CLOCK_SKEW``; nothing the publisher dates before it held the person."""
    latest, latest_day = _latest(now)
    if family == "consent":
        signed = _instant(data["captured"]["signed_at"])
        if signed > latest:
            raise Refusal("P6", "captured.signed_at is later than now")
        if held_since is not None and signed.astimezone(JST).date() < held_since:
            raise Refusal("P6", "captured.signed_at is before the registration or referral it belongs to")
        if _date(data["valid_from"]) > latest_day + timedelta(days=366):
            raise Refusal("P6", "valid_from is more than a year ahead")
        return
    for name in _DATES[family]:
        value = data.get(name)
        if value is not None and _date(value) > latest_day:
            raise Refusal("P6", f"{name} is later than today")
    first = data.get(_DATES[family][0])
    if held_since is not None and family not in INTAKE and first is not None and _date(first) < held_since:
        raise Refusal("P6", f"{_DATES[family][0]} is before the registration or referral it belongs to")


@lru_cache(maxsize=16)
def _latest(now: datetime) -> tuple[datetime, date]:
    """The latest instant and day (in Japan) an event may be dated, for ``now``: a file's rows are judged
    against one ``now`` a chunk, so its day is worked out once, not once a row."""
    latest = now + CLOCK_SKEW
    return latest, latest.astimezone(JST).date()


_DATES: Mapping[str, tuple[str, ...]] = {
    "registration": ("registered_on",),
    "referral": ("referred_on",),
    "placement": ("placed_on",),
    "retention": ("checked_on", "left_on"),
}


def check_fence(family: str, data: Mapping[str, Any], fenced_at: datetime | None) -> None:
    """P7: a consent signed at or before the person's latest withdrawal can never grant again."""
    if family != "consent" or fenced_at is None or data["action"] == "withdrawn":
        return
    if _instant(data["captured"]["signed_at"]) <= fenced_at:  # at or before: as the reads decide (P7)
        raise Refusal(
            "P7", "a withdrawal signed at or after this consent's signed_at is on record; withdrawal is final"
        )


def gained_holders(family: str, site: SiteEntry) -> frozenset[Org]:
    """P3: who holds the person once this event is accepted (only intake events confer holding)."""
    return site.parties if family in INTAKE else frozenset()


def authorize_event(
    publisher: Publisher,
    family: str,
    data: Mapping[str, Any],
    site: SiteEntry | None,
    holders: Mapping[Org, date],
    *,
    fenced_at: datetime | None = None,
    now: datetime | None = None,
    erased: bool = False,
) -> Org:
    """Every provenance rule for one event; returns the acting organisation or raises ``Refusal``."""
    if erased:
        raise Refusal("P9", "person_key: the person was erased; one who comes back gets a new key")
    if family == "consent" and str(data["captured"]["side"]) != publisher.side.value:
        raise Refusal(
            "P4", f"consent captured on side {data['captured']['side']} is published by that side only"
        )
    org = acting_org(publisher, family, data, site)
    assert site is not None
    check_holding(family, org, site, holders)
    check_times(family, data, now or datetime.now(UTC), holders.get(org) if holders else None)
    check_fence(family, data, fenced_at)
    return org


def intake_date(family: str, data: Mapping[str, Any]) -> date | None:
    """The date an intake event establishes holding from."""
    if family == "registration":
        return _date(data["registered_on"])
    if family == "referral":
        return _date(data["referred_on"])
    return None


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _instant(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


# What each side publishes (the adapters' families; the consumers re-check it against ``ce_source``).
SIDE_FAMILIES: Mapping[Side, frozenset[str]] = {
    Side.AUTHORITY: frozenset({"consent", "referral", "retention"}),
    Side.HELLO_WORK: frozenset({"registration", "consent", "placement", "retention"}),
}


# The CloudEvents source of the hub's own operator side: the only one an erasure may come from.
OPERATOR_SOURCE = "/hub/operator"


def check_erasure_source(source: str) -> None:
    """P9 as a consumer checks it: an erasure makes every consumer drop a person, so one written to the
    topic by anything but the hub's operator side (a client's credential, a rogue producer) is refused."""
    if source != OPERATOR_SOURCE:
        raise Refusal(
            "P9", f"ce_source: an erasure is published only by the hub's operator side ({OPERATOR_SOURCE})"
        )


@lru_cache(maxsize=4096)  # few sources exist (one per organisation); consumers ask for every event
def source_publisher(source: str) -> Publisher | None:
    """The publisher a CloudEvents ``source`` names (``/authorities/A``, ``/hellowork/offices/O``,
    ``/hellowork/national``), or ``None`` for any other shape."""
    parts = source.split("/")
    if len(parts) == 3 and parts[1] == "authorities" and parts[2].isascii() and parts[2].isdigit():
        return Publisher(Side.AUTHORITY, parts[2])
    if (
        len(parts) == 4
        and parts[1:3] == ["hellowork", "offices"]
        and parts[3].isascii()
        and parts[3].isdigit()
    ):
        return Publisher(Side.HELLO_WORK, parts[3])
    if source == "/hellowork/national":
        return Publisher(Side.HELLO_WORK, "*")
    return None


def check_source(
    source: str,
    family: str,
    *,
    site: str,
    authority: str | None = None,
    office: str | None = None,
    capture_side: str | None = None,
) -> None:
    """P2/P4 as a consumer can check them from the record alone: the organisation ``source`` names owns
    the codes the event carries. ``site`` is the event's site (a consent's ``captured.site``); the others
    are the fields the family has. The ``Refusal`` names the field and the rule, never a value (the
    values are the rogue's own text)."""
    publisher = source_publisher(source)
    if publisher is None:
        raise Refusal("P2", "ce_source: names no authority or Hello Work office")
    site_field = "captured.site" if family == "consent" else "site"
    if family not in SIDE_FAMILIES[publisher.side]:
        raise Refusal("P2", f"ce_type: the side ce_source names does not publish {family} events")
    if capture_side is not None and capture_side != publisher.side.value:
        raise Refusal(
            "P4", "captured.side: a consent is published only by the side that captured it (ce_source)"
        )
    if publisher.side is Side.AUTHORITY:
        if authority is not None and authority != publisher.code:
            raise Refusal("P2", "authority: not the authority ce_source names")
        if site[:6] != publisher.code:
            raise Refusal("P2", f"{site_field}: not a site of the authority ce_source names")
    elif office is not None and publisher.code != "*" and office != publisher.code:
        raise Refusal("P2", "office: not the office ce_source names")
    if authority is not None and site[:6] != authority:
        raise Refusal("P2", f"{site_field}: not a site of the event's authority")
