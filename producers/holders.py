"""Who holds a person (P3) and where their withdrawal fence stands (P7): read for authorisation and by
every disclosure, written with acceptance.

``record_holders`` and ``record_fences`` run inside the transaction that puts the events in the outbox
(``outbox.enqueue`` calls them), so a person is held exactly when the registration or referral that took
them in is accepted, and a withdrawal fences them off from the moment its 202 is sent — whatever the
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
from infra.crypto import forget_everywhere
from infra.db import AdvisoryLock

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


async def record_holders(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """P3: the parties of the site of every registration or referral among ``events`` hold that person."""
    rows = holder_rows(events)
    if not rows:
        return
    _, persons, sites, ids, sinces, offices = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(_RECORD, persons, sites, ids, sinces, offices)


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


_RECORD = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[]) AS u(p, s, i, d, o)
), parties AS (
    SELECT u.p, 'authority' AS kind, left(u.s, 6) AS code, u.d, u.s, u.i FROM u
    UNION ALL
    SELECT u.p, 'office', coalesce(u.o, st.office), u.d, u.s, u.i
    FROM u LEFT JOIN sites st ON st.site_id = u.s
    WHERE coalesce(u.o, st.office) IS NOT NULL
)
INSERT INTO person_holders (person_key, org_kind, org_code, since, site_id, event_id)
SELECT p, kind, code, min(d), min(s), min(i) FROM parties
GROUP BY p, kind, code ORDER BY p, kind, code  -- one lock order: concurrent commits cannot deadlock
ON CONFLICT (person_key, org_kind, org_code)
DO UPDATE SET since = least(person_holders.since, EXCLUDED.since)
"""


async def record_fences(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """P7: every withdrawal among ``events`` moves its person's fence to its ``signed_at`` (never back)."""
    rows: dict[str, tuple[datetime, str]] = {}
    for _, person, signed, event_id in fence_rows(events):
        if person not in rows or signed > rows[person][0]:
            rows[person] = (signed, event_id)
    if not rows:
        return
    people = sorted(rows)  # one lock order: concurrent commits cannot deadlock
    await conn.execute(
        "INSERT INTO withdrawal_fences (person_key, signed_at, event_id) "
        "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[]) "
        "ON CONFLICT (person_key) DO UPDATE SET signed_at = EXCLUDED.signed_at, event_id = EXCLUDED.event_id, "
        "accepted_at = now() WHERE EXCLUDED.signed_at > withdrawal_fences.signed_at",
        people,
        [rows[p][0] for p in people],
        [rows[p][1] for p in people],
    )


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

    def __init__(self, people: Iterable[str]) -> None:
        super().__init__(403, ERASED_MEANWHILE)
        self.people = frozenset(people)


async def erasure_fence(conn: asyncpg.Connection, persons: Iterable[str]) -> set[str]:
    """P9 inside the accepting transaction: which of these people are erased, as of now.

    Authorisation reads the erasure register before the accepting transaction, so an erasure committed
    between the two would let one request through. Here, in that transaction: the erasure lock shared
    (an erasure in flight holds it exclusively, so this waits for it to commit, and an erasure that
    starts later waits for this transaction), then the register, read by a statement that starts after
    the lock is held. The caller leaves out every event of the people returned. No data key of theirs is
    left to delete, whatever becomes of this transaction: one made before the erasure, the erasure
    deleted; after it, none is stored (``KeyStore.keys_for``, migration 015).

    The same fence, in SQL, begins migration 021's ``accept_events`` (``outbox.accept_sealed``: requests
    and trusted acceptance), and migration 029's ``accept_file_rows`` (a file chunk); this one is for a
    transaction of the caller's own (``outbox.enqueue``)."""
    wanted = sorted(set(persons))
    if not wanted:
        return set()
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", AdvisoryLock.ACCEPTANCE_ERASURE)
    rows = await conn.fetch("SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text[])", wanted)
    erased = {r[0] for r in rows}
    if erased:
        forget_everywhere(erased)  # out of this process's memory (the other processes follow the erasure)
    return erased
