"""A stored event remembers whether its personal block opened on arrival (``sv_events.block_opens``,
migration 047), so a record rebuilt from stored events (a consent arriving, a replay's consent phase)
opens again only the blocks whose fields its consent releases, and checks none of them again.

The flag is only as good as the keys: it must say what opening the block now would say. It does because
a person's data key never changes nor goes while their events are stored (erasure deletes both in one
transaction; migrations 042 and 048 take back only a key none of whose events was accepted). The last test holds
the flag to that through an erasure after the events arrived, an erasure before they are projected, and a
key taken back, and checks the view against a replay.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from consumers.catchup import end_offsets, run_until
from consumers.runtime import ConsumerRuntime
from consumers.shared_view.erasure import erase_person
from consumers.shared_view.handler import SharedViewHandler
from consumers.shared_view.replay import replay
from consumers.shared_view.store import load_views
from contracts.envelope import Event, encode
from infra.config import Settings
from infra.crypto import KeyStore, Opener
from infra.signing import erasure_signer
from producers.ingest import accept
from producers.outbox import OutboxRelay, accept_sealed
from producers.submission import Submission, to_event
from tests import factories
from tests.helpers import office_publisher, publish_records


async def _relay(settings: Settings, pool: asyncpg.Pool) -> None:
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()


async def _accept(settings: Settings, pool: asyncpg.Pool, subs: Sequence[Submission]) -> None:
    async with pool.acquire() as conn:
        await accept(
            conn, KeyStore.from_settings(settings), subs, origin="test", namespace=settings.topic_namespace
        )
    await _relay(settings, pool)


async def _publish_raw(settings: Settings, events: Sequence[Event]) -> None:
    """Straight onto the topics, as a rogue producer would (no outbox, no acceptance)."""
    await publish_records(settings, [(settings.topic(e.family), *encode(e)) for e in events])


async def _project(settings: Settings, pool: asyncpg.Pool) -> None:
    handler = SharedViewHandler(settings)
    ends = await end_offsets(settings, handler.topics)
    await run_until(ConsumerRuntime(handler, settings, pool), pool, ends, timeout_s=60)


async def _flags(conn: asyncpg.Connection, person: str) -> dict[str, bool | None]:
    rows = await conn.fetch("SELECT family, block_opens FROM sv_events WHERE person_key = $1", person)
    return {r["family"]: r["block_opens"] for r in rows}


async def _flags_say_what_opening_says(
    conn: asyncpg.Connection, settings: Settings, people: list[str]
) -> int:
    """Every stored block of these people: its flag equals whether it opens and passes its contract now,
    under the keys the database holds now. Returns how many blocks were compared."""
    rows = await conn.fetch(
        "SELECT person_key, family, data, block_opens FROM sv_events WHERE person_key = ANY($1::text[])",
        people,
    )
    opener = Opener(await KeyStore.from_settings(settings).existing_keys(conn, people))
    compared = 0
    for r in rows:
        sealed = r["data"].get("personal")
        if sealed is None:
            assert r["block_opens"] is True
            continue
        assert r["block_opens"] is (opener(r["person_key"], r["family"], sealed) is not None), r["family"]
        compared += 1
    return compared


async def test_a_consent_opens_again_only_the_blocks_it_releases_and_checks_none_again(
    pool: asyncpg.Pool, isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration, a referral and a placement held (no consent yet); then a consent granting
    ``share_registration`` only: the record takes the registration's fields and the referral's case
    number, nothing of the placement's block (its employer goes only with ``disclose_placement``). The
    rebuild opens those two blocks, checks neither against its contract again (each passed on arrival),
    and leaves the placement's shut; the record is the one opening everything gives (not masked)."""
    pk = factories.person_key()
    name = f"検証{uuid.uuid4().hex[:8]}"
    reg = factories.registration(pk, personal={"name": name, "birth_date": "1988-06-01"})
    await _accept(isolated, pool, [reg, factories.referral(pk), factories.placement(pk)])
    await _project(isolated, pool)

    calls: dict[str, int] = {"checked": 0, "known_fit": 0}
    checked = Opener.checked
    known_fit = getattr(Opener, "known_fit", None)

    def counting_checked(self: Opener, *args: Any) -> Any:
        calls["checked"] += 1
        return checked(self, *args)

    def counting_known_fit(self: Opener, *args: Any) -> Any:
        calls["known_fit"] += 1
        return known_fit(self, *args) if known_fit is not None else None

    monkeypatch.setattr(Opener, "checked", counting_checked)
    monkeypatch.setattr(Opener, "known_fit", counting_known_fit, raising=False)
    await _accept(isolated, pool, [factories.consent(pk, scopes=["share_registration"])])
    await _project(isolated, pool)
    monkeypatch.undo()

    assert calls == {"checked": 0, "known_fit": 2}, calls
    async with pool.acquire() as conn:
        assert await _flags(conn, pk) == {"registration": True, "referral": True, "placement": True}
        (view,) = await load_views(conn, [pk])
    assert view.name == name and view.case_numbers and not view.masked
    assert view.placements and "employer_name" not in view.placements[0]


async def test_a_block_that_did_not_open_on_arrival_is_opened_again_and_shows_the_person_masked(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """A placement sealed under a key that is not the person's (published straight to the topic): it does
    not open on arrival and is stored so (``block_opens`` false). A consent then rebuilds the record: that
    block is opened again (not trusted shut), does not open, and the person is shown masked — as a replay
    shows them."""
    pk = factories.person_key()
    await _accept(isolated, pool, [factories.registration(pk)])
    await _publish_raw(isolated, [to_event(factories.placement(pk), os.urandom(32))])
    await _project(isolated, pool)
    await _accept(isolated, pool, [factories.consent(pk)])
    await _project(isolated, pool)
    async with pool.acquire() as conn:
        assert await _flags(conn, pk) == {"registration": True, "placement": False}
        (view,) = await load_views(conn, [pk])
        assert view.masked and view.name is not None
        assert await _flags_say_what_opening_says(conn, isolated, [pk]) == 2


async def test_the_flags_stay_true_to_the_keys_through_erasures_and_a_key_taken_back(
    pool: asyncpg.Pool, isolated: Settings
) -> None:
    """The ways a data key goes: erased after the person's events were stored (held), erased before their
    events were projected (a consent forged afterwards straight onto the topic), and taken back by
    ``accept_events`` from a refused unit (042) with the person's blocks of that unit published anyway
    and their accepted events sealed under the key stored later. After each, every stored block's flag
    says what opening it now says; the erased have no stored event; the view equals a replay's."""
    keystore = KeyStore.from_settings(isolated)
    signer = erasure_signer(isolated)
    after, before, taken, kept = (factories.person_key() for _ in range(4))
    await _accept(isolated, pool, [factories.registration(after), factories.placement(after)])
    await _project(isolated, pool)  # held: stored with their flags, no consent
    await _accept(isolated, pool, [factories.registration(before), factories.placement(before)])
    async with pool.acquire() as conn:
        for person in (after, before):
            await erase_person(
                conn, keystore, person, requested_by="test", namespace=isolated.topic_namespace, signer=signer
            )
    await _relay(isolated, pool)  # the erasure events
    forged = [to_event(factories.consent(p), None) for p in (after, before)]

    # 042: the unit of "taken" loses its idempotency key to the unit of "kept" after the keys went in
    client, _ = await office_publisher(pool, "block-opens-taken-back")
    sealing = keystore.sealing_keys([], [taken, kept])
    units = [
        [to_event(factories.placement(kept), sealing.keys[kept])],
        [to_event(factories.placement(taken), sealing.keys[taken])],
    ]
    same = f"same-{taken}"
    async with pool.acquire() as conn:
        verdicts = await accept_sealed(
            conn,
            units,
            sealing.fresh,
            [(0, "office:1102", same, b"h", "placement"), (1, "office:1102", same, b"h", "placement")],
            clients=[client, client],
            origin="test",
            namespace=isolated.topic_namespace,
        )
        assert verdicts.kept == {0}, "control: the unit of 'taken' was refused"
        assert not await conn.fetchval("SELECT count(*) FROM person_data_keys WHERE person_key = $1", taken)
    await _publish_raw(isolated, [*forged, *units[1]])  # the refused unit's block, sealed under the lost key
    await _accept(
        isolated, pool, [factories.registration(taken), factories.consent(taken), factories.consent(kept)]
    )
    await _project(isolated, pool)

    people = [after, before, taken, kept]
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM sv_events WHERE person_key = ANY($1::text[])", [after, before]
            )
            == 0
        )
        assert await _flags(conn, taken) == {"registration": True, "placement": False}
        assert await _flags_say_what_opening_says(conn, isolated, people) == 3
        live = sorted(await load_views(conn, people))
        assert [v.person_key for v in live] == sorted([taken, kept])
        assert [v.masked for v in live if v.person_key == taken] == [True]

        await replay(isolated, pool)
        assert sorted(await load_views(conn, people)) == live
        assert await _flags_say_what_opening_says(conn, isolated, people) == 3
