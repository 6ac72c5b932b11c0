"""``ittai.erasure.v1`` in the placement feed (``consumers.erasure``).

What goes: the person's consent records (they decide deliveries: kept, they would go on deciding about a
person who no longer exists for the hub — ``erase_person`` deletes them at once, and an older consent
event of the person applied after it, while the feed lagged, wrote them again) and the sealed personal
blocks of their registrations and placements (the individual list's material; no key opens them any
more, and now nothing is left to open). What stays: the statistical facts — sex, age band, dates, site —
which the published revisions of past months counted; erasure does not rewrite the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from infra.crypto import forget_everywhere


async def drop_erased(conn: asyncpg.Connection, persons: Sequence[str]) -> None:
    people = list(persons)
    await conn.execute("DELETE FROM feed_consents WHERE person_key = ANY($1::text[])", people)
    for table in ("feed_registrations", "feed_placements"):
        await conn.execute(
            f"UPDATE {table} SET personal = 'null'::jsonb WHERE person_key = ANY($1::text[]) "
            "AND personal <> 'null'::jsonb",
            people,
        )
    forget_everywhere(people)
