"""The consent store every consumer keeps its consent records in: the latest version of each record
(``domain.consent`` rule 1), one table per consumer (``sv_consents``, ``feed_consents``), one set of SQL.

Which version to keep is decided by the planning functions (``domain.consent.newest_versions``); the
upsert's ``WHERE EXCLUDED.version > …`` repeats rule 1 so that nothing can roll a record back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

import asyncpg
import orjson

from domain.consent import ConsentRecord, PersonConsent, Recipient, Scope

ConsentTable = Literal["sv_consents", "feed_consents"]
_SCOPES = {s.value: s for s in Scope}


class ConsentStore:
    def __init__(self, table: ConsentTable) -> None:
        self.table = table
        self._upsert = (
            f"INSERT INTO {table} (consent_id, person_key, version, withdrawn, scopes, recipients, valid_from, "
            "valid_until, signed_at, event_id) SELECT u.id, u.pk, u.v, u.w, "
            "ARRAY(SELECT jsonb_array_elements_text(u.s::jsonb)), u.r::jsonb, u.vf, u.vu, u.sa, u.eid "
            "FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::text[], $6::text[], $7::date[], "
            "$8::date[], $9::timestamptz[], $10::text[]) AS u(id, pk, v, w, s, r, vf, vu, sa, eid) "
            "ON CONFLICT (person_key, consent_id) DO UPDATE SET version = EXCLUDED.version, withdrawn = EXCLUDED.withdrawn, "
            "scopes = EXCLUDED.scopes, recipients = EXCLUDED.recipients, valid_from = EXCLUDED.valid_from, "
            "valid_until = EXCLUDED.valid_until, signed_at = EXCLUDED.signed_at, event_id = EXCLUDED.event_id "
            f"WHERE EXCLUDED.version > {table}.version"
        )
        self._select = (
            "SELECT person_key, consent_id, version, withdrawn, scopes, recipients, valid_from, valid_until, "
            f"signed_at FROM {table} WHERE person_key = ANY($1::text[])"
        )

    async def save(self, conn: asyncpg.Connection, consents: Sequence[PersonConsent]) -> None:
        if not consents:
            return
        cols: tuple[list[object], ...] = ([], [], [], [], [], [], [], [], [], [])
        for c in consents:
            rec = c.record
            row = (
                rec.consent_id,
                c.person_key,
                rec.version,
                rec.withdrawn,
                orjson.dumps(sorted(s.value for s in rec.scopes)).decode(),
                orjson.dumps(
                    [
                        {"kind": r.kind, "code": r.code}
                        for r in sorted(rec.recipients, key=lambda r: (r.kind, r.code))
                    ]
                ).decode(),
                rec.valid_from,
                rec.valid_until,
                rec.signed_at,
                c.event_id,
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
        await conn.execute(self._upsert, *cols)

    async def load(self, conn: asyncpg.Connection, persons: Iterable[str]) -> dict[str, list[ConsentRecord]]:
        """Each person's kept records (people without any are absent)."""
        out: dict[str, list[ConsentRecord]] = {}
        for r in await conn.fetch(self._select, list(persons)):
            out.setdefault(r["person_key"], []).append(
                ConsentRecord(
                    consent_id=r["consent_id"],
                    version=r["version"],
                    withdrawn=r["withdrawn"],
                    scopes=_scope_set(tuple(r["scopes"])),
                    recipients=_recipient_set(tuple((x["kind"], x["code"]) for x in r["recipients"])),
                    valid_from=r["valid_from"],
                    valid_until=r["valid_until"],
                    signed_at=r["signed_at"],
                )
            )
        return out


# Few distinct scope and recipient sets exist (one per site, roughly): build each once.
@lru_cache(maxsize=4096)
def _scope_set(scopes: tuple[str, ...]) -> frozenset[Scope]:
    return frozenset(_SCOPES[s] for s in scopes)


@lru_cache(maxsize=4096)
def _recipient_set(recipients: tuple[tuple[str, str], ...]) -> frozenset[Recipient]:
    return frozenset(Recipient(kind, code) for kind, code in recipients)
