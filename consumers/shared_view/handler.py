"""The shared-view projection: a batch of events in, the affected people's shared records out.

Per batch, in the runtime's transaction (a handful of statements whatever the batch size):

1. skip people on the erasure register (and drop their cached keys);
2. store consents (newest version wins) and the other events sealed, idempotently by event id;
3. for every person the batch touched, decide the active consent (``domain.shared_view``);
4. for those with active consent: a record already in the view under the same consent terms takes only
   the batch's newly stored events (``extend``; nothing is written when nothing shown changes); the
   others (newcomers, changed terms, a second registration) are rebuilt from all their stored events;
5. delete the records of those without — that is withdrawal, and it is logged with its latency.

A record is a pure function of the person's stored events and consent (``extend`` gives what ``project``
over all of them gives), so redelivered, replayed or out-of-order events give the same view. Nothing is
cached between batches: the records read back from ``sv_persons`` in the batch's transaction are the
state extended, so a restart, a rebalance or an erasure needs no invalidation.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from operator import attrgetter
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consumers.provenance import check_sources
from consumers.runtime import Consumed, ConsumerRuntime
from contracts.envelope import Family
from domain.consent import ConsentRecord, Recipient, Scope
from domain.shared_view import (
    PersonView,
    StoredEvent,
    active_consent,
    consent_record,
    extend,
    project,
    same_consent,
)
from infra.config import Settings
from infra.crypto import KeyStore

JST = timezone(timedelta(hours=9), "JST")
# Batches hold this shared; erasure holds it exclusively, so no batch can write a person's clear data
# after (or while) that person is erased.
ERASURE_LOCK = 7_204_001

CONSUMER_NAME = "shared-view"
_SCOPES = {s.value: s for s in Scope}


def today_jst() -> date:
    return datetime.now(JST).date()


class SharedViewHandler:
    def __init__(
        self,
        settings: Settings,
        *,
        keystore: KeyStore | None = None,
        name: str = CONSUMER_NAME,
        today: Callable[[], date] = today_jst,
    ) -> None:
        self.name = name
        self.topics: Sequence[str] = settings.event_topics
        self.keystore = keystore or KeyStore.from_settings(settings)
        self.today = today
        self.masked_events = 0  # events of erased people skipped (replays show them masked)

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        check_sources(batch)  # P2/P4 again: a record is not trusted because it is on the topic
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
        touched = {c.event.subject for c in batch}
        erased = {
            r[0]
            for r in await conn.fetch(
                "SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text[])", list(touched)
            )
        }
        for person in erased:
            self.keystore.forget(person)
        seen: set[str] = set()
        consents: list[Consumed] = []
        others: list[Consumed] = []
        for c in batch:
            if c.event.subject in erased:
                self.masked_events += 1
            elif c.event.id not in seen:
                seen.add(c.event.id)
                (consents if c.event.family is Family.CONSENT else others).append(c)
        touched -= erased
        if not touched:
            return
        await _store_consents(conn, consents)
        records = await _consents_of(conn, touched)
        today = self.today()
        active = {p: rc for p in touched if (rc := active_consent(records.get(p, ()), today)) is not None}
        inserted = await _store_events(conn, others, set(active))
        current = {v.person_key: v for v in await load_views(conn, touched)}
        newly = [p for p in active if p not in current]
        if newly:  # held events become visible now
            await conn.execute(
                "UPDATE sv_events SET applied_at = clock_timestamp() "
                "WHERE person_key = ANY($1::text[]) AND applied_at IS NULL",
                newly,
            )
        # People already in the view under the same consent take only this batch's new events; the rest
        # (newcomers, changed consent) are rebuilt from all their stored events.
        fresh: dict[str, list[Consumed]] = {}
        for c in others:
            if c.event.id in inserted and c.event.subject in current and c.event.subject in active:
                fresh.setdefault(c.event.subject, []).append(c)
        rebuild: dict[str, ConsentRecord] = {}
        extended: list[PersonView] = []
        opener = _Opener(await self.keystore.existing_keys(conn, fresh)) if fresh else None
        for person, consent in active.items():
            view = current.get(person)
            if view is None or not same_consent(view, consent):
                rebuild[person] = consent
                continue
            new = fresh.get(person)
            if not new:
                continue  # nothing this record shows has changed
            assert opener is not None
            stored = []
            for c in new:
                data = orjson.loads(c.value)
                stored.append(
                    StoredEvent(c.event.id, c.event.family.value, c.event.time, data, opener(person, data))
                )
            merged = extend(view, consent, stored)
            if merged is None:
                rebuild[person] = consent
            elif merged != view:  # e.g. retention checkpoints without the scope that shows them
                extended.append(merged)
        await write_views(conn, extended)
        await self.rebuild(conn, rebuild)
        removed = {p for p in current if p not in active}
        if removed:
            await conn.execute("DELETE FROM sv_persons WHERE person_key = ANY($1::text[])", list(removed))
            await _log_withdrawals(conn, [c for c in consents if c.event.subject in removed])

    async def rebuild(self, conn: asyncpg.Connection, active: dict[str, ConsentRecord]) -> None:
        """Write the records of these people (all with an active consent) from their stored events."""
        if not active:
            return
        rows = await conn.fetch(
            "SELECT person_key, event_id, family, event_time, data FROM sv_events "
            "WHERE person_key = ANY($1::text[])",
            list(active),
        )
        opener = _Opener(await self.keystore.existing_keys(conn, active))
        events: dict[str, list[StoredEvent]] = {p: [] for p in active}
        for r in rows:
            person = r["person_key"]
            data = r["data"]
            events[person].append(
                StoredEvent(r["event_id"], r["family"], r["event_time"], data, opener(person, data))
            )
        views = [project(p, consent, events[p]) for p, consent in active.items()]
        await write_views(conn, [v for v in views if v is not None])

    async def refresh_validity(self, conn: asyncpg.Connection) -> int:
        """Consents start and end on dates, not only on events: bring in people whose consent became
        valid and drop those whose consent expired. Returns how many people were looked at again."""
        today = self.today()
        candidates = await conn.fetch(
            "SELECT person_key FROM sv_persons WHERE valid_until < $1 OR valid_from > $1 "
            "UNION SELECT c.person_key FROM sv_consents c WHERE NOT c.withdrawn AND c.valid_from <= $1 "
            "AND (c.valid_until IS NULL OR c.valid_until >= $1) "
            "AND NOT EXISTS (SELECT 1 FROM sv_persons p WHERE p.person_key = c.person_key) "
            "AND NOT EXISTS (SELECT 1 FROM sv_erasures e WHERE e.person_key = c.person_key)",
            today,
        )
        persons = {r[0] for r in candidates}
        if not persons:
            return 0
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
        records = await _consents_of(conn, persons)
        active = {p: c for p in persons if (c := active_consent(records.get(p, ()), today)) is not None}
        await conn.execute(
            "DELETE FROM sv_persons WHERE person_key = ANY($1::text[])",
            [p for p in persons if p not in active],
        )
        await conn.execute(
            "UPDATE sv_events SET applied_at = clock_timestamp() "
            "WHERE person_key = ANY($1::text[]) AND applied_at IS NULL",
            list(active),
        )
        await self.rebuild(conn, active)
        return len(persons)


def runtime_for(
    handler: SharedViewHandler,
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    role: str = "live",
    fence: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> ConsumerRuntime:
    """The runtime for ``handler``. Positions live in PostgreSQL under the handler's name; the Kafka group
    only spreads partitions, so it is per topic namespace (and per role), never shared across them — a
    group shared by unrelated consumers makes every start wait for the others to rebalance."""
    return ConsumerRuntime(
        handler, settings, pool, group_id=f"{handler.name}.{settings.topic_namespace}.{role}", fence=fence
    )


class _Opener:
    """Opens sealed blocks for one batch: the ``infra.crypto`` scheme (AES-256-GCM, person key as
    associated data) with one cipher object per person, because this is the projection's hot loop."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = keys
        self._ciphers: dict[str, AESGCM] = {}

    def __call__(self, person: str, data: dict[str, Any]) -> dict[str, Any] | None:
        sealed = data.get("personal")
        if sealed is None:
            return None
        cipher = self._ciphers.get(person)
        if cipher is None:
            key = self._keys.get(person)
            if key is None:
                return None  # erased: the block stays shut and the record shows as masked
            cipher = self._ciphers[person] = AESGCM(key)
        try:
            plain = cipher.decrypt(_unb64(sealed["nonce"]), _unb64(sealed["ct"]), person.encode())
        except InvalidTag:
            return None
        opened: dict[str, Any] = orjson.loads(plain)
        return opened


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_json(c: Consumed) -> bytes:
    """The event's JSON exactly as received: cheaper than re-serialising the validated model."""
    return c.value


async def _store_consents(conn: asyncpg.Connection, consents: Sequence[Consumed]) -> None:
    if not consents:
        return
    latest: dict[tuple[str, str], tuple[Consumed, ConsentRecord]] = {}  # P8: by (person, consent_id)
    for c in consents:
        record = consent_record(orjson.loads(_raw_json(c)))
        held = latest.get((c.event.subject, record.consent_id))
        if held is None or record.version > held[1].version:
            latest[(c.event.subject, record.consent_id)] = (c, record)
    cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
    for c, rec in latest.values():
        row = (
            rec.consent_id,
            c.event.subject,
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
            c.event.id,
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    await conn.execute(
        "INSERT INTO sv_consents (consent_id, person_key, version, withdrawn, scopes, recipients, valid_from, "
        "valid_until, signed_at, event_id) SELECT u.id, u.pk, u.v, u.w, "
        "ARRAY(SELECT jsonb_array_elements_text(u.s::jsonb)), u.r::jsonb, u.vf, u.vu, u.sa, u.eid "
        "FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::text[], $6::text[], $7::date[], "
        "$8::date[], $9::timestamptz[], $10::text[]) AS u(id, pk, v, w, s, r, vf, vu, sa, eid) "
        "ON CONFLICT (person_key, consent_id) DO UPDATE SET version = EXCLUDED.version, "
        "withdrawn = EXCLUDED.withdrawn, scopes = EXCLUDED.scopes, recipients = EXCLUDED.recipients, "
        "valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until, signed_at = EXCLUDED.signed_at, event_id = EXCLUDED.event_id "
        "WHERE EXCLUDED.version > sv_consents.version",
        *cols,
    )


# Few distinct scope and recipient sets exist (one per site, roughly): build each once.
@lru_cache(maxsize=4096)
def _scope_set(scopes: tuple[str, ...]) -> frozenset[Scope]:
    return frozenset(_SCOPES[s] for s in scopes)


@lru_cache(maxsize=4096)
def _recipient_set(recipients: tuple[tuple[str, str], ...]) -> frozenset[Recipient]:
    return frozenset(Recipient(kind, code) for kind, code in recipients)


async def _consents_of(conn: asyncpg.Connection, persons: Iterable[str]) -> dict[str, list[ConsentRecord]]:
    rows = await conn.fetch(
        "SELECT person_key, consent_id, version, withdrawn, scopes, recipients, valid_from, valid_until, "
        "signed_at FROM sv_consents WHERE person_key = ANY($1::text[])",
        list(persons),
    )
    out: dict[str, list[ConsentRecord]] = {}
    for r in rows:
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


async def _store_events(conn: asyncpg.Connection, events: Sequence[Consumed], active: set[str]) -> set[str]:
    """Store the events not stored yet; returns the ids of those that were new."""
    if not events:
        return set()
    ids, persons, families, times, data, applied = [], [], [], [], [], []
    now = datetime.now(UTC)
    for c in events:
        e = c.event
        ids.append(e.id)
        persons.append(e.subject)
        families.append(e.family.value)
        times.append(e.time)
        data.append(_raw_json(c).decode())
        applied.append(now if e.subject in active else None)
    stored = await conn.fetch(
        "INSERT INTO sv_events (event_id, person_key, family, event_time, data, applied_at) "
        "SELECT i, p, f, t, d::jsonb, a FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], "
        "$5::text[], $6::timestamptz[]) AS u(i, p, f, t, d, a) ON CONFLICT (event_id) DO NOTHING "
        "RETURNING event_id",
        ids,
        persons,
        families,
        times,
        data,
        applied,
    )
    return {r[0] for r in stored}


_VIEW_COLUMNS = (
    ("person_key", "text"),
    ("consent_id", "text"),
    ("scopes", "jsonb"),
    ("recipient_authorities", "jsonb"),
    ("recipient_offices", "jsonb"),
    ("valid_from", "date"),
    ("valid_until", "date"),
    ("authority", "text"),
    ("office", "text"),
    ("site", "text"),
    ("registered_on", "date"),
    ("sex", "text"),
    ("age_band", "text"),
    ("attributes", "jsonb"),
    ("desired_occupation", "text"),
    ("team_support", "bool"),
    ("referring_authorities", "jsonb"),
    ("referrals", "jsonb"),
    ("placements", "jsonb"),
    ("retention", "jsonb"),
    ("name", "text"),
    ("name_kana", "text"),
    ("birth_date", "date"),
    ("phone", "text"),
    ("email", "text"),
    ("address", "text"),
    ("job_seeker_number", "text"),
    ("case_numbers", "jsonb"),
    ("masked", "bool"),
)
VIEW_FIELDS = tuple(name for name, _ in _VIEW_COLUMNS)
_JSON = {name for name, kind in _VIEW_COLUMNS if kind == "jsonb"}
# jsonb travels as text through unnest (a jsonb[] parameter would need one codec call per element). Column
# arrays through unnest cost PostgreSQL less than one JSON document taken apart by json_to_recordset
# (measured: about half the server time for the same rows), and the database is what bounds a batch.
_PARAMS = ", ".join(f"${i}::{'text' if k == 'jsonb' else k}[]" for i, (_, k) in enumerate(_VIEW_COLUMNS, 1))
_SELECT = ", ".join(f"{n}::jsonb" if k == "jsonb" else n for n, k in _VIEW_COLUMNS)
_NAMES = ", ".join(VIEW_FIELDS)
_UPSERT = (
    f"INSERT INTO sv_persons ({_NAMES}, updated_at) SELECT {_SELECT}, clock_timestamp() "
    f"FROM unnest({_PARAMS}) AS u({_NAMES}) ON CONFLICT (person_key) DO UPDATE SET "
    + ", ".join(f"{n} = EXCLUDED.{n}" for n in (*VIEW_FIELDS[1:], "updated_at"))
)
_view_tuple = attrgetter(*VIEW_FIELDS)
_JSON_AT = frozenset(i for i, (_, kind) in enumerate(_VIEW_COLUMNS) if kind == "jsonb")


async def write_views(conn: asyncpg.Connection, views: Sequence[PersonView]) -> None:
    if not views:
        return
    dumps = orjson.dumps
    rows = [_view_tuple(v) for v in views]
    cols = [
        [dumps(x).decode() for x in column] if i in _JSON_AT else list(column)
        for i, column in enumerate(zip(*rows, strict=True))
    ]
    await conn.execute(_UPSERT, *cols)


async def _log_withdrawals(conn: asyncpg.Connection, consents: Sequence[Consumed]) -> None:
    withdrawals = [c for c in consents if c.event.data.action.value == "withdrawn"]
    if not withdrawals:
        return
    await conn.execute(
        "INSERT INTO sv_withdrawals (event_id, person_key, consent_id, accepted_at, removed_at, latency_ms) "
        "SELECT u.eid, u.pk, u.cid, o.accepted_at, clock_timestamp(), "
        "extract(epoch FROM clock_timestamp() - o.accepted_at) * 1000 "
        "FROM unnest($1::text[], $2::text[], $3::text[]) AS u(eid, pk, cid) "
        "LEFT JOIN LATERAL (SELECT min(accepted_at) AS accepted_at FROM outbox WHERE event_id = u.eid) o ON true "
        "ON CONFLICT (event_id) DO NOTHING",
        [c.event.id for c in withdrawals],
        [c.event.subject for c in withdrawals],
        [c.event.data.consent_id for c in withdrawals],
    )


async def load_views(conn: asyncpg.Connection, persons: Iterable[str] | None = None) -> list[PersonView]:
    """Records as stored (``None`` = everyone), for reads, tests and the replay comparison."""
    sql = f"SELECT {_NAMES} FROM sv_persons"
    rows = (
        await conn.fetch(sql + " WHERE person_key = ANY($1::text[])", list(persons))
        if persons is not None
        else await conn.fetch(sql)
    )
    return [view_from_row(r) for r in rows]


def view_from_row(row: asyncpg.Record | dict[str, Any]) -> PersonView:
    values: dict[str, Any] = {}
    for name in VIEW_FIELDS:
        value = row[name]
        if name in _JSON:
            value = tuple(value)
        values[name] = value
    return PersonView(**values)
