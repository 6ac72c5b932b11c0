"""The shared-view consumer: a batch of events in, the affected people's shared records out.

The same shape as every consumer (``docs/ARCHITECTURE.md``): load → plan (pure, ``domain.shared_view``)
→ write (``store``). Per batch, in the runtime's transaction, a handful of statements whatever its size:

1. load: who of the batch's people is on the erasure register, which events are stored already, their
   kept consents, their withdrawal fences (P7, ``consumers.registers``) and their records in the view;
   open the new events' personal blocks and check them against the contract (an unfit one is refused:
   that event alone is dead-lettered);
2. plan (``plan_batch``): consents to keep (newest version wins), events to store (held while no consent
   covers them), records extended in place, records to rebuild, people to remove (withdrawal, or a
   consent behind the person's fence);
3. write the plan and the records extended in place (one staged update; their jsonb fields the batch
   left as they were are kept as stored); meanwhile, rebuild the records the plan could not extend from
   their stored events (read before the plan's writes, plus the batch's new ones: ``project``) and encode
   them; then write those records (one staged merge).

A record is a pure function of the person's stored events and consent (``extend`` gives what ``project``
over all of them gives), so redelivered, replayed or out-of-order events give the same view. Nothing is
cached between batches but data keys: the records read back from ``sv_persons`` in the batch's
transaction are the state extended, so a restart, a rebalance or an erasure needs no invalidation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from consumers import registers
from consumers.erasure import erasures_in
from consumers.provenance import check_sources
from consumers.runtime import Consumed, HandlerRejected, incoming
from consumers.shared_view import store
from consumers.shared_view.erasure import drop_erased
from contracts.envelope import Family
from domain.batch import CONSENT, Incoming, once_each
from domain.calendar import JST
from domain.consent import ConsentRecord
from domain.shared_view import (
    UNREAD,
    PersonView,
    StoredEvent,
    ViewState,
    active_consent,
    persons_in,
    plan_batch,
    project,
    releases,
)
from infra.config import Settings
from infra.crypto import KeyStore, Opener, UnfitBlock
from infra.kafka import partitions_of
from infra.signing import erasure_verifier

CONSUMER_NAME = "shared-view"


# ``sv_events.data`` is ``json`` (the record's text, verbatim: migration 017). ``jsonb`` refused a NUL
# escape, which PostgreSQL's text cannot hold, and so dead-lettered the event; ``json`` keeps it. Refused
# here as before, so that no stored event can make a later rebuild fail on its way into the view's text
# columns.
NUL_IN_DATA = "data: a \\u0000 escape (PostgreSQL text cannot hold a NUL)"


def _nul_escape(raw: bytes) -> bool:
    """Does this JSON text hold a ``\\u0000`` escape? (Not one whose backslash is itself escaped.)"""
    at = raw.find(b"\\u0000")
    while at >= 0:
        slashes = 0
        while at - slashes - 1 >= 0 and raw[at - slashes - 1] == 0x5C:
            slashes += 1
        if slashes % 2 == 0:
            return True
        at = raw.find(b"\\u0000", at + 1)
    return False


_TURN = 128  # records projected or encoded between two turns of the event loop (about a millisecond)


async def _encoded(
    views: Sequence[PersonView], stored: Mapping[str, PersonView] | None = None
) -> list[list[Any]]:
    """``store.view_rows`` (``store.extended_rows`` of records extended from ``stored``), taking turns with
    the event loop."""
    rows: list[list[Any]] = []
    for start in range(0, len(views), _TURN):
        if start:
            await asyncio.sleep(0)
        part = views[start : start + _TURN]
        rows += store.view_rows(part) if stored is None else store.extended_rows(part, stored)
    return rows


async def _checked_blocks(
    opener: Opener, events: Sequence[Incoming]
) -> dict[str, Mapping[str, object] | UnfitBlock | None]:
    """Each event's personal block opened and checked (``Opener.checked``), or why it is unfit; taking
    turns with the event loop, so the batch's reads go on meanwhile."""
    out: dict[str, Mapping[str, object] | UnfitBlock | None] = {}
    for i, e in enumerate(events, 1):
        try:
            out[e.event_id] = opener.checked(e.person_key, e.family, e.data["personal"])
        except UnfitBlock as unfit:
            out[e.event_id] = unfit
        if i % _TURN == 0:
            await asyncio.sleep(0)
    return out


def today_jst() -> date:
    return datetime.now(JST).date()


class SharedViewHandler:
    plain_data = True  # takes its events' data through ``incoming`` (consumers.runtime)

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
        self.erasure_verifier = erasure_verifier(settings)
        self.today = today
        self.partitions = settings.topic_partitions
        self.masked_events = 0  # events of erased people skipped (replays show them masked), committed
        self._masked_pending = 0  # of the batch whose transaction has not committed yet (``committed``)

    def committed(self) -> None:
        """The runtime's call once the last ``handle``'s transaction committed: only then do its masked
        events count (a retried, split or stale batch ran ``handle`` more than once)."""
        self.masked_events += self._masked_pending
        self._masked_pending = 0

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        self._masked_pending = 0
        # The erasure lock first, as ``erase_person`` takes it before touching the same rows: dropping an
        # erased person's rows before it could deadlock against an operator erasing that person again.
        # Then the locks of the batch's people (``store.begin``): another worker's transaction about one of
        # them (an assignment that is not person-affine, a member a rebalance left behind) waits for ours.
        await store.begin(conn, self._partitions_of({c.event.subject for c in batch}))
        # ittai.erasure.v1 (source re-checked) applied first: the register it writes makes the rest skip them
        batch, erased = erasures_in(batch, self.erasure_verifier)
        if erased:
            await drop_erased(conn, erased)
        if not batch:
            return
        check_sources(batch)  # P2/P4 again: a record is not trusted because it is on the topic
        consent = Family.CONSENT  # bound once: an enum member read costs ~70 ns on 3.11 (as erasure._ERASURE)
        for c in batch:
            if c.event.family is not consent and _nul_escape(c.value):
                raise HandlerRejected(NUL_IN_DATA)
        events = [incoming(c) for c in batch]
        state, opener = await self._load(conn, events)
        plan = plan_batch(events, state)
        self._masked_pending = plan.masked_events
        # The records to rebuild come from their people's events stored before this batch plus the batch's
        # new ones, held here: so PostgreSQL stores the plan, then the records extended in place, while
        # those are encoded and the others projected and encoded here (the two used to take turns, each
        # idle while the other worked). The rebuilt records are written last.
        stored = await store.stored_events(conn, plan.rebuild) if plan.rebuild else []
        extended: asyncio.Future[list[list[Any]]] = asyncio.get_running_loop().create_future()
        # By event id, as the plan keeps them: an id's first non-consent delivery (``once_each``). Kept by
        # the last, a record forged under one person ahead of another's real event with the same id took
        # that event's JSON as its own stored event (review11 F1); a consent (kept by record, never stored
        # here) ahead of an event with its id would have given the event the consent's JSON.
        raw: dict[str, bytes] = {}
        for c in batch:
            if c.event.family is not consent:
                raw.setdefault(c.event.id, c.value)

        async def write() -> None:
            await store.write_plan(conn, plan, raw, state.known, state.opened)
            await store.write_extended(conn, await extended)

        writing = asyncio.ensure_future(write())
        try:
            extended.set_result(await _encoded(plan.write, state.views))
            arrived = [
                e for e, _ in plan.events if e.person_key in plan.rebuild and e.event_id not in state.known
            ]
            rebuilt = await self._projected(plan.rebuild, stored, arrived, state.opened, opener)
            rows = await _encoded(rebuilt)
        except BaseException:
            extended.cancel()  # the writes end at their next await (a no-op once the rows were handed on)
            await asyncio.wait({writing})  # the connection is free again before the transaction rolls back
            if not writing.cancelled():
                writing.exception()  # retrieved: the error raised here is the one to report
            raise
        await writing
        await store.write_views(conn, rows)

    def _partitions_of(self, persons: Collection[str]) -> list[int]:
        """The partition numbers these people's events go to, on every topic."""
        return partitions_of([person.encode() for person in persons], self.partitions)

    async def _load(self, conn: asyncpg.Connection, events: Sequence[Incoming]) -> tuple[ViewState, Opener]:
        """The batch's state, and an opener holding the data keys of its people (the batch holds the
        erasure lock, so no key goes away before the rebuild uses them)."""
        persons = persons_in(events)
        erased = await store.erased(conn, persons)
        for person in erased:
            self.keystore.forget(person)
        persons -= erased
        opener = Opener(await self.keystore.existing_keys(conn, persons) if persons else {})
        # Each id's first non-consent delivery only, the one ``plan_batch`` keeps (``once_each``): ``opened``
        # is by event id, and a later delivery's block (a forged repeat's victim: another person's event,
        # same id), opened under its own person's key, was taken as the first's (review11 F1).
        others = [e for e in once_each(events) if e.family != CONSENT and e.person_key in persons]
        # The rest of the state is read while the batch's personal blocks are opened here (PostgreSQL and
        # this process each used to wait for the other): every block with a personal part, before knowing
        # which events are stored already — a repeat's block is opened for nothing, and only ever refused
        # below if its event is new.
        sealed = [e for e in others if e.data.get("personal") is not None]
        consenting = {e.person_key for e in events if e.family == CONSENT and e.person_key in persons}
        reading = asyncio.ensure_future(
            self._state_of(conn, persons, consenting, [e.event_id for e in others])
        )
        try:
            checked = await _checked_blocks(opener, sealed)
        except BaseException:
            await asyncio.wait({reading})  # the connection is free again before the transaction rolls back
            if not reading.cancelled():
                reading.exception()  # retrieved: the error raised here is the one to report
            raise
        known, consents, views, fences = await reading
        # Every new personal block is checked as it arrives, whether or not a record in the view takes it
        # now (``extend``): one the contract refuses costs its own event only (dead-lettered, in live and
        # replay alike), never the person's later consents, whose rebuild would meet it.
        opened: dict[str, Mapping[str, object] | None] = {}
        for e in sealed:
            if e.event_id not in known:
                block = checked[e.event_id]
                if isinstance(block, UnfitBlock):
                    raise HandlerRejected(f"{e.family} personal block once opened: {block.reason}")
                opened[e.event_id] = block
        return ViewState(self.today(), erased, known, consents, views, opened, fences), opener

    @staticmethod
    async def _state_of(
        conn: asyncpg.Connection,
        persons: Collection[str],
        consenting: Collection[str],
        event_ids: Sequence[str],
    ) -> tuple[
        frozenset[str], Mapping[str, Sequence[ConsentRecord]], dict[str, PersonView], Mapping[str, datetime]
    ]:
        """Which of these events are stored already, and the people's kept consents, records in the view
        and withdrawal fences (``consenting``: those of them with a consent in the batch).

        Records and fences are read only for people with a consent record, kept or in the batch: a record
        is written only in the transaction that keeps the consent putting it there, and a kept consent is
        deleted only with the record (erasure, replay), so someone without one has no record; and
        ``plan_batch`` asks the fence only of a person with a consent record. A replay's event batches,
        before any consent, read neither."""
        known = await store.known_events(conn, event_ids)
        if not persons:
            return known, {}, {}, {}
        consents = await store.consents.load(conn, persons)
        views = {v.person_key: v for v in await store.load_views(conn, consents)} if consents else {}
        asked = consents.keys() | consenting
        return known, consents, views, await registers.fences_of(conn, asked) if asked else {}

    async def rebuild(self, conn: asyncpg.Connection, active: Mapping[str, ConsentRecord]) -> None:
        """Write the records of these people (all with an active consent) from their stored events."""
        if not active:
            return
        stored = await store.stored_events(conn, active)
        opener = Opener(await self.keystore.existing_keys(conn, active))
        views = await self._projected(active, stored, (), {}, opener)
        await store.write_views(conn, await _encoded(views))

    @staticmethod
    async def _projected(
        active: Mapping[str, ConsentRecord],
        stored: Sequence[asyncpg.Record],
        arrived: Iterable[Incoming],
        opened: Mapping[str, Mapping[str, object] | None],
        opener: Opener,
    ) -> list[PersonView]:
        """The records of ``active`` (person → active consent) from their events: ``stored`` rows and the
        batch's ``arrived`` events (their blocks ``opened`` and checked on arrival, not opened again), each
        event once. A stored block known to open (``block_opens``, migration 047: it opened and passed its
        contract on arrival) is opened again only where the person's consent releases a field of it
        (``releases``), and not checked again; else it is ``UNREAD``. One not known to open (it did not on
        arrival, or was stored before the flag) is opened and checked as on arrival. Takes turns with the
        event loop, so the batch's writes go on meanwhile."""
        events: dict[str, dict[str, StoredEvent]] = {p: {} for p in active}
        # Positionally, in ``store.stored_events``' column order: its six lookups by name took ~1.3 us a row
        # more (timeit, loaded), and a consent's rebuild reads all of its person's events.
        for person, event_id, family, event_time, data, block_opens in stored:
            sealed = data.get("personal")
            if event_id in opened:
                personal = opened[event_id]
            elif sealed is None:
                personal = None
            elif block_opens:  # it opened, and passed its contract, under the key the person has
                personal = (
                    opener.known_fit(person, sealed) if releases(family, active[person].scopes) else UNREAD
                )
            else:
                personal = opener(person, family, sealed)
            events[person][event_id] = StoredEvent(event_id, family, event_time, data, personal)
        for e in arrived:
            events[e.person_key].setdefault(
                e.event_id, StoredEvent(e.event_id, e.family, e.time, e.data, opened.get(e.event_id))
            )
        views = []
        for i, (p, consent) in enumerate(active.items(), 1):
            if (view := project(p, consent, list(events[p].values()))) is not None:
                views.append(view)
            if i % _TURN == 0:
                await asyncio.sleep(0)
        return views

    async def refresh_validity(self, conn: asyncpg.Connection) -> int:
        """Consents start and end on dates, not only on events: bring in people whose consent became
        valid and drop those whose consent expired. Returns how many people were looked at again."""
        today = self.today()
        persons = await store.validity_candidates(conn, today)
        if not persons:
            return 0
        await store.begin(conn, self._partitions_of(persons))
        records = await store.consents.load(conn, persons)
        fences = await registers.fences_of(conn, persons)
        active = {
            p: c
            for p in persons
            if (c := active_consent(records.get(p, ()), today, fences.get(p))) is not None
        }
        await store.remove(conn, [p for p in persons if p not in active])
        await store.reveal(conn, active)
        await self.rebuild(conn, active)
        return len(persons)
