"""Who holds a person (P3) and where their withdrawal fence stands (P7): read for authorisation and by
every disclosure, written with acceptance.

The accepting transaction records them with the events' outbox rows (``holder_rows`` and ``fence_rows``
feed ``accept_events`` (migration 042) and ``accept_file_rows`` (048)), so a person is held exactly when
the registration or referral that took them in is accepted, and a withdrawal fences them off from the moment its 202 is sent — whatever the
consumers' lag: every read and feed delivery checks ``withdrawal_fences``.
The site's authority is the site id's prefix; its office is the registry's (or the registration's own
``office``, which P2 ties to the registry at the edge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from contracts.envelope import Event
from domain.provenance import INTAKE, Org, SiteEntry, intake_date
from infra.auth import AuthError

Registers = tuple[dict[str, SiteEntry], dict[str, dict[Org, date]], dict[str, datetime], set[str]]


async def registers_of(
    conn: asyncpg.Connection, sites: Iterable[str], persons: Iterable[str], *, fences: bool
) -> Registers:
    """What authorisation reads, in one round trip: the registry entries of ``sites`` (P2), the holders
    of ``persons`` (P3: person -> {holder: since}; people nobody holds are absent), their withdrawal
    fences if asked (P7: person -> the ``signed_at`` of their latest withdrawal) and which of them are
    on the erasure register (P9)."""
    row = await conn.fetchrow(f"SELECT {REGISTERS}", *registers_args(sites, persons, fences=fences))
    assert row is not None
    return registers_from(row)


def registers_args(sites: Iterable[str], persons: Iterable[str], *, fences: bool) -> tuple[Any, ...]:
    """The parameters $1–$3 of ``REGISTERS``."""
    return sorted(set(sites)), sorted(set(persons)), fences


def registers_from(row: Mapping[str, Any]) -> Registers:
    """The registers from a row that selected ``REGISTERS``."""
    entries = {s: SiteEntry(s, authority, office) for s, authority, office in row["sites"]}
    held: dict[str, dict[Org, date]] = {}
    for person, kind, code, since in row["holders"]:
        held.setdefault(person, {})[Org(kind, code)] = since
    fenced = {person: signed_at for person, signed_at in row["fences"]}
    return entries, held, fenced, set(row["erased"])


# The select list of the four registers, parameters $1–$3 (``registers_args``), for ``registers_of`` and
# for a caller that reads them in a statement of its own (the adapters' group commit). Anonymous records
# come back typed (text, date, timestamptz).
REGISTERS = """
  ARRAY(SELECT (site_id, authority, office) FROM sites WHERE site_id = ANY($1::text[])) AS sites,
  ARRAY(SELECT (person_key, org_kind, org_code, since) FROM person_holders
        WHERE person_key = ANY($2::text[])) AS holders,
  ARRAY(SELECT (person_key, signed_at) FROM withdrawal_fences
        WHERE $3 AND person_key = ANY($2::text[])) AS fences,
  ARRAY(SELECT person_key FROM sv_erasures WHERE person_key = ANY($2::text[])) AS erased
"""


def holder_rows(events: Sequence[Event]) -> list[tuple[int, str, str, str, date, str | None]]:
    """(index in ``events``, person, site, event id, since, office) of every registration or referral."""
    rows: list[tuple[int, str, str, str, date, str | None]] = []
    for n, e in enumerate(events):
        family = e.family.value
        if family not in INTAKE:
            continue
        # Read by attribute: the data is the contract's model, or its ``contracts.wire`` struct (a file's).
        data: dict[str, Any] = {
            k: getattr(e.data, k, None) for k in ("site", "office", "registered_on", "referred_on")
        }
        since = intake_date(family, data)
        assert since is not None
        rows.append((n, e.subject, data["site"], e.id, since, data["office"]))
    return rows


def fence_rows(events: Sequence[Event]) -> list[tuple[int, str, datetime, str]]:
    """(index in ``events``, person, signed_at, event id) of every withdrawal."""
    return [
        (n, e.subject, e.data.captured.signed_at, e.id)
        for n, e in enumerate(events)
        if e.family.value == "consent" and e.data.action.value == "withdrawn"
    ]


ERASED_MEANWHILE = "P9: person_key: the person was erased while this was being accepted"


class ErasedMeanwhile(AuthError):
    """P9 at commit: some of the people were erased after authorisation read the register (403)."""

    def __init__(self) -> None:
        super().__init__(403, ERASED_MEANWHILE)
