"""The feed projection's store: what the projection loads for a batch and how it writes the plan.

Writes are column arrays through ``unnest`` (one round trip per table and batch), keyed like the facts
(``ON CONFLICT``), so a fact written twice is written once whatever planned it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from consumers.consent_store import ConsentStore
from domain.feed_projection import FeedPlan, FeedState, Placed
from infra.db import AdvisoryLock

consents = ConsentStore("feed_consents")


async def load(conn: asyncpg.Connection, persons: Sequence[str], checkpoints: Sequence[str]) -> FeedState:
    """The kept facts of these people; ``checkpoints``: placements whose retention the batch reports."""
    registrations: dict[str, list[Any]] = {}
    for r in await conn.fetch(
        "SELECT event_id, person_key, authority, registered_on FROM feed_registrations "
        "WHERE person_key = ANY($1::text[])",
        persons,
    ):
        registrations.setdefault(r["person_key"], []).append(
            (r["event_id"], r["authority"], r["registered_on"])
        )
    referrals: dict[str, list[Any]] = {}
    for r in await conn.fetch(
        "SELECT referral_id, person_key, authority FROM feed_referrals WHERE person_key = ANY($1::text[])",
        persons,
    ):
        referrals.setdefault(r["person_key"], []).append((r["referral_id"], r["authority"]))
    placements: dict[str, list[Placed]] = {}
    for r in await conn.fetch(
        "SELECT placement_id, person_key, placed_on, site_authority FROM feed_placements "
        "WHERE person_key = ANY($1::text[])",
        persons,
    ):
        placements.setdefault(r["person_key"], []).append(
            Placed(r["placement_id"], r["placed_on"], r["site_authority"])
        )
    retention = (
        {
            (r["placement_id"], r["checkpoint_months"], r["person_key"]): r["arrived_at"]
            for r in await conn.fetch(
                "SELECT placement_id, checkpoint_months, person_key, arrived_at FROM feed_retention "
                "WHERE placement_id = ANY($1::text[])",
                checkpoints,
            )
        }
        if checkpoints
        else {}
    )
    kept = await consents.load(conn, persons)
    versions = {(p, r.consent_id): r.version for p, records in kept.items() for r in records}
    return FeedState(registrations, referrals, placements, retention, versions)


async def write(conn: asyncpg.Connection, plan: FeedPlan) -> None:
    # A registration's referral time (``referred_at``, migration 049) is kept by triggers that each read
    # the other fact table: two transactions writing one person's registration and referral at once (two
    # feed processes: the consumer is not person-affine) would each miss the other's row, and the
    # registration keep no time. So such writers of one person take turns (``AdvisoryLock.FEED_PERSONS``,
    # buckets in ascending order: no circular wait), and the second's triggers see what the first committed.
    people = {r[1] for r in plan.registrations} | {r[1] for r in plan.referrals}
    if people:
        await conn.execute(_PEOPLE_LOCKS, sorted(people))
    await _insert(
        conn,
        "feed_registrations",
        _REGISTRATION,
        plan.registrations,
        json_at=frozenset({6}),
        text_array_at=frozenset({8}),
    )
    await _insert(
        conn,
        "feed_referrals",
        _REFERRAL,
        plan.referrals,
        conflict="(referral_id, person_key, authority) DO NOTHING",  # its own person's and authority's (064)
    )
    await _insert(
        conn,
        "feed_placements",
        _PLACEMENT,
        plan.placements,
        json_at=frozenset({12}),
        text_array_at=frozenset({11}),
        conflict="(placement_id, person_key) DO NOTHING",  # a placement is its own person's (046)
    )
    await _insert(
        conn,
        "feed_retention",
        _RETENTION,
        plan.retention,
        conflict="(placement_id, checkpoint_months, person_key) DO UPDATE SET status = EXCLUDED.status, "
        "checked_on = EXCLUDED.checked_on, arrived_at = EXCLUDED.arrived_at "
        "WHERE EXCLUDED.arrived_at > feed_retention.arrived_at",
    )
    await consents.save(conn, plan.consents)
    if plan.marks:
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT * FROM unnest($1::text[], $2::text[])",
            [m.authority for m in plan.marks],
            [m.month for m in plan.marks],
        )


_PEOPLE_LOCKS = (
    f"SELECT pg_advisory_xact_lock({AdvisoryLock.FEED_PERSONS.value}, b) FROM "
    "(SELECT DISTINCT abs(hashtext(p)) % 64 AS b FROM unnest($1::text[]) AS p ORDER BY b) s"
)
_REGISTRATION = (
    ("event_id", "text"), ("person_key", "text"), ("authority", "text"), ("site", "text"),
    ("registered_on", "date"), ("team_support", "bool"), ("personal", "jsonb"), ("arrived_at", "timestamptz"),
    ("attributes", "text[]"), ("sex", "text"), ("age_band", "text"), ("foreign_national", "bool"),
    ("prior_application_office", "text"),
)  # fmt: skip
_REFERRAL = (
    ("referral_id", "text"), ("person_key", "text"), ("authority", "text"), ("site", "text"),
    ("referred_on", "date"), ("arrived_at", "timestamptz"), ("team_support_from", "date"),
)  # fmt: skip
_PLACEMENT = (
    ("placement_id", "text"), ("person_key", "text"), ("site", "text"), ("site_authority", "text"),
    ("placed_on", "date"), ("route", "text"), ("occupation", "text"), ("classification_version", "text"),
    ("employment_type", "text"), ("sex", "text"), ("age_band", "text"), ("attributes", "text[]"),
    ("personal", "jsonb"), ("arrived_at", "timestamptz"), ("foreign_national", "bool"), ("office", "text"),
)  # fmt: skip
_RETENTION = (
    ("placement_id", "text"), ("checkpoint_months", "int"), ("person_key", "text"), ("status", "text"),
    ("checked_on", "date"), ("arrived_at", "timestamptz"),
)  # fmt: skip


async def _insert(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    json_at: frozenset[int] = frozenset(),
    text_array_at: frozenset[int] = frozenset(),
    conflict: str = "DO NOTHING",
) -> None:
    """``INSERT … SELECT … FROM unnest(column arrays) ON CONFLICT …``. jsonb travels as text; a text[] column
    as the text of its array literal (unnest would flatten an array of arrays)."""
    if not rows:
        return
    names = ", ".join(n for n, _ in columns)
    params = ", ".join(
        f"${i}::{'text' if i - 1 in json_at or i - 1 in text_array_at else kind}[]"
        for i, (_, kind) in enumerate(columns, 1)
    )
    select = ", ".join(
        f"{n}::jsonb" if i in json_at else f"{n}::text[]" if i in text_array_at else n
        for i, (n, _) in enumerate(columns)
    )
    cols = []
    for i, column in enumerate(zip(*rows, strict=True)):
        if i in json_at:
            cols.append([orjson.dumps(v).decode() for v in column])
        elif i in text_array_at:
            cols.append([_array_literal(v) for v in column])
        else:
            cols.append(list(column))
    await conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {select} FROM unnest({params}) AS u({names}) "
        f"ON CONFLICT {conflict}",
        *cols,
    )


def _array_literal(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of codes (``{a,b}``); every element quoted, so no value can break it."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
