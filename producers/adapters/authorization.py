"""Who may publish what: the provenance rules of ``domain.provenance`` (P1–P6) at the adapters' edge.

An authority publishes only at its own registered sites, a Hello Work office only at sites registered to
it; consent only by the side and organisation that captured it; anything but a registration or referral
only about people the organisation holds; nothing dated in the future. Pure over an authenticated
``Principal``, a validated event and a ``Context`` (the sites registry and the holders of the people
concerned, looked up by the caller), so the rules are tested without a database. A refusal is an
``AuthError(403)`` whose reason names the rule and the codes involved (codes are not personal data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache, lru_cache
from typing import Any

import msgspec
from pydantic import BaseModel

from contracts.envelope import Family
from domain.provenance import (
    Org,
    Publisher,
    Refusal,
    Side,
    SiteEntry,
    authorize_event,
    event_site,
    gained_holders,
    intake_date,
)
from infra.auth import AuthError, OrgKind, Principal


class Adapter(StrEnum):
    WELFARE = "welfare"  # authority side (自治体)
    EMPLOYMENT = "employment"  # Hello Work side (ハローワーク)


FAMILIES: Mapping[Adapter, tuple[Family, ...]] = {
    Adapter.WELFARE: (Family.CONSENT, Family.REFERRAL, Family.RETENTION),
    Adapter.EMPLOYMENT: (Family.REGISTRATION, Family.CONSENT, Family.PLACEMENT, Family.RETENTION),
}
_ORG_KINDS: Mapping[Adapter, frozenset[OrgKind]] = {
    Adapter.WELFARE: frozenset({OrgKind.AUTHORITY}),
    Adapter.EMPLOYMENT: frozenset({OrgKind.OFFICE, OrgKind.HELLO_WORK_NATIONAL}),
}
# Where consent was signed decides which side's adapter may carry it.
_CONSENT_SIDE = {Adapter.WELFARE: "authority", Adapter.EMPLOYMENT: "hello_work"}


def check_client(adapter: Adapter, principal: Principal) -> None:
    """The client's organisation kind fits this adapter (authorities to welfare, Hello Work to employment)."""
    if principal.org_kind not in _ORG_KINDS[adapter]:
        kinds = " or ".join(sorted(k.value for k in _ORG_KINDS[adapter]))
        raise AuthError(
            403,
            f"the {adapter.value} adapter takes clients of {kinds}; client {principal.client_id} is "
            f"{principal.organisation}",
        )


@dataclass(slots=True)
class Context:
    """What authorisation needs to know besides the event: the registry entries of the sites involved and
    the holders of the people involved. ``holders`` grows as a batch's intake events are authorised, so
    a registration and the consent signed with it can travel in one request."""

    sites: Mapping[str, SiteEntry] = field(default_factory=dict)
    holders: dict[str, dict[Org, date]] = field(default_factory=dict)
    fences: dict[str, datetime] = field(default_factory=dict)  # person -> latest withdrawal (P7)
    erased: set[str] = field(default_factory=set)  # people on the erasure register (P9)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def site_of(family: Family, data: Mapping[str, Any]) -> str:
    """The joint site an event happened at: the registry entry authorisation needs."""
    return event_site(family.value, data)


@lru_cache(maxsize=256)  # one a client: a file's rows are authorised one by one for the same principal
def publisher_of(principal: Principal) -> Publisher:
    if principal.org_kind is OrgKind.AUTHORITY:
        return Publisher(Side.AUTHORITY, principal.org_code)
    if principal.org_kind is OrgKind.OFFICE:
        return Publisher(Side.HELLO_WORK, principal.org_code)
    return Publisher(Side.HELLO_WORK, "*")  # national Hello Work: any office, as that site's office


def authorize(
    adapter: Adapter, principal: Principal, family: Family, data: Mapping[str, Any], ctx: Context
) -> str:
    """Raise AuthError(403) unless ``principal`` may publish this event; return the CloudEvents source."""
    check_client(adapter, principal)
    if family is Family.CONSENT:
        side = data["captured"]["side"]
        if side != _CONSENT_SIDE[adapter]:
            other = "employment" if adapter is Adapter.WELFARE else "welfare"
            raise AuthError(
                403,
                f"consent captured on side {side!r} goes through the {other} adapter; the {adapter.value} "
                f"adapter carries consent signed at {_SIGNED_AT[adapter]}",
            )
    if family is Family.REFERRAL and not principal.covers_authority(str(data["authority"])):
        raise _deny(principal, "a referral by another authority")
    person = str(data["person_key"])
    held = ctx.holders.get(person, {})
    kind = family.value  # read once: an enum member's value is a descriptor call (a file: once a row)
    site = ctx.sites.get(event_site(kind, data))
    try:
        org = authorize_event(
            publisher_of(principal),
            kind,
            data,
            site,
            held,
            fenced_at=ctx.fences.get(person),
            now=ctx.now,
            erased=person in ctx.erased,
        )
    except Refusal as exc:
        raise _deny(principal, f"this {kind} event ({exc.reason})") from None
    assert site is not None
    gained = gained_holders(kind, site)
    if gained:
        since = intake_date(kind, data)
        assert since is not None
        mine = ctx.holders.setdefault(person, {})
        for holder in gained:
            mine[holder] = min(mine.get(holder, since), since)
    if family is Family.CONSENT and data.get("action") == "withdrawn":
        signed = data["captured"]["signed_at"]
        ctx.fences[person] = max(ctx.fences.get(person, signed), signed)
    if org.kind == "authority":
        return f"/authorities/{org.code}"
    return f"/hellowork/offices/{org.code}"


_SIGNED_AT = {
    Adapter.WELFARE: "the authority",
    Adapter.EMPLOYMENT: "Hello Work or the joint reception",
}


def _deny(principal: Principal, what: str) -> AuthError:
    return AuthError(403, f"client {principal.client_id} ({principal.organisation}) may not publish {what}")


_AUTHORIZATION_FIELDS = (
    "person_key",
    "authority",
    "site",
    "office",
    "valid_from",
    "action",
    "registered_on",
    "referred_on",
    "placed_on",
    "checked_on",
    "left_on",
)


def authorised_fields(data: BaseModel | msgspec.Struct) -> Mapping[str, Any]:
    """The few fields authorisation reads (a full dump per event would cost more than the check), of a
    validated model or of its ``contracts.wire`` struct (a batch file's rows)."""
    names, has_captured = _fields_read(type(data))
    view: dict[str, Any] = {k: getattr(data, k) for k in names}
    if has_captured:
        captured = data.captured  # type: ignore[union-attr]
        view["captured"] = {
            "side": captured.side.value,
            "site": captured.site,
            "signed_at": captured.signed_at,
        }
    return view


@cache  # one entry a contract (a model or its struct)
def _fields_read(kind: type[BaseModel] | type[msgspec.Struct]) -> tuple[tuple[str, ...], bool]:
    """Which of the fields authorisation reads ``kind`` has, and whether it has ``captured``: worked out
    once a type, not once a row (a file's rows read them by name, not through a dump of every field)."""
    names = set(kind.model_fields) if issubclass(kind, BaseModel) else set(kind.__struct_fields__)
    return tuple(k for k in _AUTHORIZATION_FIELDS if k in names), "captured" in names
