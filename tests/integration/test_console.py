"""The operator console over HTTP on the real stack: access, figures against Kafka, dead-letter desk.

Each test module works in its own topic namespace, so the figures it checks are exactly what it
published and consumed, whatever else the session's tests do in the same database.
"""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx

from consumers.event_log import EventLogHandler
from consumers.monitoring import queries
from consumers.monitoring.kafka_probe import KafkaProbe
from consumers.monitoring.queries import optional
from consumers.runtime import ConsumerRuntime
from contracts.envelope import Family
from infra.auth import OrgKind, Role, add_client, revoke_client
from infra.config import Settings
from infra.kafka import start_producer
from producers.outbox import OutboxRelay
from tests import factories
from tests.browser.console_server import RunningConsole
from tests.browser.flows import Picky, consume_all, kafka_ends, publish
from tests.helpers import read_topic, wait_for


async def _client(pool: asyncpg.Pool, kind: OrgKind, code: str, roles: set[Role]) -> str:
    async with pool.acquire() as conn:
        _, token = await add_client(
            conn, name=f"test {kind.value}", org_kind=kind, org_code=code, roles=frozenset(roles)
        )
    return token


async def test_only_operators_get_in(ready: asyncpg.Pool, console: RunningConsole) -> None:
    pool = ready
    authority = await _client(pool, OrgKind.AUTHORITY, factories.AUTHORITY, {Role.READ, Role.PUBLISH})
    office = await _client(pool, OrgKind.OFFICE, factories.OFFICE, {Role.READ})
    operator = await _client(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    async with httpx.AsyncClient(base_url=console.url) as http:
        # No session: pages send the browser to the login form; the API says 401.
        page = await http.get("/topics")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/topics"
        assert (await http.get("/api/snapshot")).status_code == 401
        # Authority and office credentials are refused, with the reason.
        for token, org in (
            (authority, f"authority:{factories.AUTHORITY}"),
            (office, f"office:{factories.OFFICE}"),
        ):
            refused = await http.post("/login", data={"token": token})
            assert refused.status_code == 403
            assert f"belongs to {org}: the console admits operator clients only" in refused.text
            assert "ittai_console" not in refused.cookies
            api = await http.get("/api/snapshot", headers={"Authorization": f"Bearer {token}"})
            assert api.status_code == 403 and "operator clients only" in api.json()["error"]
        wrong = await http.post("/login", data={"token": operator + "x"})
        assert wrong.status_code == 401 and "unknown client or wrong secret" in wrong.text
        # An operator logs in and gets a session cookie; the API also takes the operator's bearer token.
        ok = await http.post("/login", data={"token": operator, "next": "/consumers"})
        assert ok.status_code == 303 and ok.headers["location"] == "/consumers"
        assert (await http.get("/consumers")).status_code == 200
        api = await http.get("/api/snapshot", headers={"Authorization": f"Bearer {operator}"})
        assert api.status_code == 200 and "topics" in api.json()
        # A forged or tampered cookie is no session.
        forged = httpx.AsyncClient(
            base_url=console.url, cookies={"ittai_console": "x" + ok.cookies["ittai_console"]}
        )
        async with forged:
            assert (await forged.get("/")).status_code == 303
        # Revoking the operator ends the session at the next request.
        async with pool.acquire() as conn:
            await revoke_client(conn, operator[4:].partition(".")[0])
        assert (await http.get("/")).status_code == 303
        # Every login attempt is in the audit, without the token.
        async with pool.acquire() as conn:
            actions = await conn.fetch("SELECT action, outcome, detail FROM console_actions ORDER BY id")
        assert [a["action"] for a in actions].count("login_refused") >= 3
        assert any(a["action"] == "login" and a["outcome"] == "ok" for a in actions)
        assert not any(operator.partition(".")[2] in (a["detail"] or "") for a in actions)


async def test_pages_speak_japanese_or_english(ready: asyncpg.Pool, console: RunningConsole) -> None:
    operator = await _client(ready, OrgKind.OPERATOR, "*", {Role.OPERATE})
    async with httpx.AsyncClient(base_url=console.url, headers={"Accept-Language": "ja-JP,ja;q=0.9"}) as http:
        login = await http.get("/login")
        assert '<html lang="ja">' in login.text and "運用担当者専用" in login.text
        await http.post("/login", data={"token": operator})
        overview = await http.get("/")
        assert "<h1>概要</h1>" in overview.text and "未処理のデッドレター" in overview.text
        assert re.search(r"令和\d+年\d+月\d+日 \d\d:\d\d:\d\d 時点の数値です", overview.text)  # JST, 和暦
        # The switch wins over Accept-Language, and sends the browser back where it was.
        switched = await http.get("/lang/en", params={"next": "/consumers"})
        assert switched.status_code == 303 and switched.headers["location"] == "/consumers"
        english = await http.get("/consumers")
        assert '<html lang="en">' in english.text and "<h1>Consumer groups</h1>" in english.text
        assert re.search(r"Figures as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST", english.text)
        elsewhere = await http.get("/lang/ja", params={"next": "https://evil.example/"})
        assert elsewhere.headers["location"] == "/"


async def test_health_and_metrics(console: RunningConsole) -> None:
    async with httpx.AsyncClient(base_url=console.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        metrics = await wait_for(
            lambda: http.get("/metrics/"), until=lambda r: "ittai_topic_end_offset{" in r.text, timeout_s=20
        )
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "ittai_dead_letters_open" in metrics.text


async def test_snapshot_figures_match_kafka_and_positions(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    pool, s = ready, console_settings
    operator = await _client(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    topic = s.topic(Family.REGISTRATION)
    before = await kafka_ends(s, topic)
    first = [factories.registration(factories.person_key()) for _ in range(7)]
    await publish(s, pool, first, origin="console-test")
    await consume_all(
        ConsumerRuntime(EventLogHandler(s), s, pool, group_id=f"{s.topic_namespace}-log"), pool, s
    )
    second = [factories.registration(factories.person_key()) for _ in range(5)]
    await publish(s, pool, second, origin="console-test")

    async with httpx.AsyncClient(
        base_url=console.url, headers={"Authorization": f"Bearer {operator}"}
    ) as http:
        snap = (await http.get("/api/snapshot")).json()
    reg = next(t for t in snap["topics"] if t["topic"] == topic)
    assert reg["end_total"] == before + 12 == await kafka_ends(s, topic)
    assert sum(p["end"] for p in reg["partitions"]) == reg["end_total"]
    assert len(reg["partitions"]) == s.topic_partitions
    log = next(c for c in snap["consumers"] if c["consumer"] == "event-log")
    reg_lag = sum(p["lag"] for p in log["partitions"] if p["topic"] == topic)
    assert reg_lag == 5, log["partitions"]  # published after the consumer stopped
    origin = next(a for a in snap["outbox"]["adapters"] if a["origin"] == "console-test")
    assert origin["backlog"] == 0 and origin["last_accepted"] is not None
    other_namespace = [
        c for c in snap["consumers"] for p in c["partitions"] if not p["topic"].startswith(s.topic_namespace)
    ]
    assert other_namespace == []


async def test_redrive_and_discard_are_recorded_once(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    pool, s = ready, console_settings
    operator = await _client(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    subs = [factories.registration(factories.person_key()) for _ in range(3)]
    await publish(s, pool, subs, origin="console-test")
    handler = Picky(s, {subs[0].event_id: "site not yet configured", subs[1].event_id: "test duplicate"})
    await consume_all(ConsumerRuntime(handler, s, pool), pool, s)
    async with pool.acquire() as conn:
        letters = await conn.fetch(
            "SELECT id, reason FROM dead_letters WHERE consumer = 'picky-log' AND source_topic = $1 ORDER BY id",
            s.topic(Family.REGISTRATION),
        )
    assert len(letters) == 2
    by_reason = {r["reason"].rsplit(": ", 1)[1]: r["id"] for r in letters}
    redrive_id, discard_id = by_reason["site not yet configured"], by_reason["test duplicate"]

    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
        assert page.status_code == 200
        assert f'data-letter="{redrive_id}"' in page.text and "site not yet configured" in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # Without the form's CSRF token nothing happens.
        forged = await http.post("/dead-letters", data={"op": f"redrive:{redrive_id}", "csrf": "nope"})
        assert forged.status_code == 403 and "csrf" in forged.json()["error"]
        done = await http.post("/dead-letters", data={"op": f"redrive:{redrive_id}", "csrf": csrf})
        assert done.status_code == 200 and "redrive: done" in done.text
        again = await http.post("/dead-letters", data={"op": f"redrive:{redrive_id}", "csrf": csrf})
        assert "refused — already resolved" in again.text
        dropped = await http.post("/dead-letters", data={"op": f"discard:{discard_id}", "csrf": csrf})
        assert "discard: done" in dropped.text
        bogus = await http.post("/dead-letters", data={"op": "delete:selected", "csrf": csrf})
        assert bogus.status_code == 400 and "unknown action" in bogus.json()["error"]
        assert "delete" not in bogus.text  # what was sent is not echoed

    # The redrive went into the outbox (nothing but the relay writes event topics); once the relay has
    # run, the record is back on its source topic once, byte for byte, without dlq_* headers.
    async with pool.acquire() as conn:
        queued = await conn.fetch(
            "SELECT topic, origin FROM outbox JOIN outbox_pending USING (id) WHERE event_id = $1",
            subs[0].event_id,
        )
    assert [(r["topic"], r["origin"]) for r in queued] == [(s.topic(Family.REGISTRATION), "console-redrive")]
    relay = OutboxRelay(s, pool)
    try:
        await relay.drain()
    finally:
        await relay.close()
    copies = [
        r
        for r in await read_topic(s, s.topic(Family.REGISTRATION))
        if dict(r.headers)["ce_id"] == subs[0].event_id.encode()
    ]
    assert len(copies) == 2
    assert copies[0].value == copies[1].value and copies[0].key == copies[1].key
    assert not any(k.startswith("dlq_") for k, _ in copies[1].headers)
    async with pool.acquire() as conn:
        actions = await conn.fetch(
            "SELECT action, outcome, client_id, detail FROM console_actions WHERE action IN ('redrive', 'discard') "
            "AND target IN ($1, $2) ORDER BY id",
            f"dead letter #{redrive_id}",
            f"dead letter #{discard_id}",
        )
        resolutions = await conn.fetch(
            "SELECT dead_letter_id, resolution FROM dead_letter_resolutions WHERE dead_letter_id = ANY($1::bigint[])",
            [redrive_id, discard_id],
        )
    assert [(a["action"], a["outcome"]) for a in actions] == [
        ("redrive", "ok"),
        ("redrive", "refused"),
        ("discard", "ok"),
    ]
    assert all(a["client_id"] == operator[4:].partition(".")[0] for a in actions)
    assert {(r["dead_letter_id"], r["resolution"]) for r in resolutions} == {
        (redrive_id, "redriven"),
        (discard_id, "discarded"),
    }
    # After the fix the redriven event takes effect; the discarded one stays out.
    handler.reject.clear()
    await consume_all(ConsumerRuntime(handler, s, pool), pool, s)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM event_log WHERE event_id = $1", subs[1].event_id) == 0
        )


async def test_redrive_publishes_the_registered_record_not_one_planted_at_its_position(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    """A writer of the dead-letter topic puts a record there first that claims a real letter's source
    position (and consumer): the desk took the earliest such record, so a redrive of the real letter
    queued the planted key, headers and value for the event topic. The register keeps the original
    record's digest; only a dead-letter record with that digest is shown or redriven."""
    pool, s = ready, console_settings
    operator = await _client(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    sub = factories.registration(factories.person_key())
    await publish(s, pool, [sub], origin="console-test")
    topic = s.topic(Family.REGISTRATION)
    real = next(r for r in await read_topic(s, topic) if dict(r.headers)["ce_id"] == sub.event_id.encode())
    planted_id = "planted" + uuid.uuid4().hex[:12]
    planted_headers = [(k, planted_id.encode() if k == "ce_id" else v) for k, v in real.headers]
    claims = [
        ("dlq_reason", b"registration: planted"),
        ("dlq_source_topic", topic.encode()),
        ("dlq_source_partition", str(real.partition).encode()),
        ("dlq_source_offset", str(real.offset).encode()),
        ("dlq_consumer", b"picky-log"),
    ]
    producer = await start_producer(s)
    try:
        await producer.send_and_wait(
            s.deadletter_topic,
            key=real.key,
            value=b"planted value",
            headers=[*planted_headers, *claims],
            partition=0,
        )
    finally:
        await producer.stop()
    handler = Picky(s, {sub.event_id: "site not yet configured"})
    await consume_all(ConsumerRuntime(handler, s, pool), pool, s)
    async with pool.acquire() as conn:
        letter_id = await conn.fetchval(
            "SELECT id FROM dead_letters WHERE consumer = 'picky-log' AND source_topic = $1 "
            "AND source_partition = $2 AND source_offset = $3",
            topic,
            real.partition,
            real.offset,
        )

    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
        assert f'data-letter="{letter_id}"' in page.text
        assert planted_id not in page.text  # the planted record is never shown as the letter's
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        done = await http.post("/dead-letters", data={"op": f"redrive:{letter_id}", "csrf": csrf})
        assert done.status_code == 200 and "redrive: done" in done.text
        assert planted_id not in done.text

    async with pool.acquire() as conn:
        queued = await conn.fetch(
            "SELECT o.key, o.value, o.event_id FROM outbox o JOIN outbox_pending USING (id) "
            "WHERE o.origin = 'console-redrive' AND o.topic = $1",
            topic,
        )
    assert [(r["key"], r["value"], r["event_id"]) for r in queued] == [(real.key, real.value, sub.event_id)]


async def test_a_letter_registered_without_a_digest_is_not_redriven(
    ready: asyncpg.Pool, console: RunningConsole, console_settings: Settings
) -> None:
    """A register row kept before migration 055 has no digest, so no dead-letter record can be told apart
    from one planted at its position: the redrive is refused with that reason (discarding still works)."""
    pool, s = ready, console_settings
    operator = await _client(pool, OrgKind.OPERATOR, "*", {Role.OPERATE})
    sub = factories.registration(factories.person_key())
    await publish(s, pool, [sub], origin="console-test")
    await consume_all(ConsumerRuntime(Picky(s, {sub.event_id: "test old letter"}), s, pool), pool, s)
    async with pool.acquire() as conn:
        letter_id = await conn.fetchval(
            "UPDATE dead_letters SET digest = NULL WHERE consumer = 'picky-log' AND reason LIKE '%test old letter' "
            "RETURNING id"
        )
    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = await http.post("/dead-letters", data={"op": f"redrive:{letter_id}", "csrf": csrf})
        assert "refused — registered before record digests were kept" in refused.text
        dropped = await http.post("/dead-letters", data={"op": f"discard:{letter_id}", "csrf": csrf})
        assert "discard: done" in dropped.text
    async with pool.acquire() as conn:
        assert not await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE origin = 'console-redrive' AND event_id = $1", sub.event_id
        )


async def test_a_letter_id_is_ascii_digits(ready: asyncpg.Pool, console: RunningConsole) -> None:
    """``str.isdigit()`` is true of ``²`` (on which ``int()`` fails: a 500) and ``٣`` (read as 3), and a
    30-digit id overflowed the database's bigint: each is refused (400), naming the field, not echoed."""
    operator = await _client(ready, OrgKind.OPERATOR, "*", {Role.OPERATE})
    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for which in ["²", "٣", "１", "9" * 30, "9" * 5000]:
            refused = await http.post("/dead-letters", data={"op": f"redrive:{which}", "csrf": csrf})
            assert refused.status_code == 400, (which[:5], refused.status_code)
            assert "op: expected" in refused.json()["error"] and which not in refused.text


async def test_selected_letter_ids_are_bounded(ready: asyncpg.Pool, console: RunningConsole) -> None:
    """The form's ``selected`` ids as ``op``'s single id: an id past the database's bigint (or of 19 digits
    and more, or below 1) was a 500; each is refused 422 naming the field and the rule, not echoed, and
    so is a list longer than the page ever shows."""
    operator = await _client(ready, OrgKind.OPERATOR, "*", {Role.OPERATE})
    async with httpx.AsyncClient(base_url=console.url) as http:
        await http.post("/login", data={"token": operator})
        page = await http.get("/dead-letters")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for selected in (["8" * 30, "1"], [str(2**63)], ["-" + "7" * 30], ["0"], ["8" * 5000], ["²"]):
            refused = await http.post(
                "/dead-letters", data={"op": "redrive:selected", "selected": selected, "csrf": csrf}
            )
            assert refused.status_code == 422, (selected[0][:5], refused.status_code)
            errors = refused.json()["errors"]
            assert errors[0]["field"].endswith("selected[0]"), errors
            assert len(selected[0]) < 5 or selected[0][:12] not in refused.text, refused.text
        many = await http.post(
            "/dead-letters", data={"op": "discard:selected", "selected": ["1"] * 501, "csrf": csrf}
        )
        assert many.status_code == 422 and "500" in many.json()["errors"][0]["rule"]


async def test_missing_views_read_as_not_available(ready: asyncpg.Pool) -> None:
    async with ready.acquire() as conn:
        assert await optional(lambda: conn.fetch("SELECT * FROM v_view_that_does_not_exist")) is None
        assert await optional(lambda: conn.fetch("SELECT no_such_column FROM console_actions")) is None
        assert await optional(lambda: conn.fetchval("SELECT 1")) == 1


async def test_probe_reads_one_record_and_scans(ready: asyncpg.Pool, console_settings: Settings) -> None:
    s = console_settings
    sub = factories.referral(factories.person_key())
    await publish(s, ready, [sub], origin="console-test")
    topic = s.topic(Family.REFERRAL)
    probe = KafkaProbe(s)
    try:
        records = await probe.scan(topic, {})
        mine = next(r for r in records if dict(r.headers)["ce_id"] == sub.event_id.encode())
        again = await probe.read_one(topic, mine.partition, mine.offset)
        assert again is not None and again.value == mine.value
        ends = (await probe.offsets([topic]))[topic]
        assert await probe.read_one(topic, mine.partition, ends[mine.partition].end) is None
        assert await probe.scan(topic, {p.partition: p.end for p in ends}) == []
    finally:
        await probe.close()


async def test_rejection_rules_are_listed_bounded_with_totals_kept(ready: asyncpg.Pool) -> None:
    """However many distinct rules the register holds, the console lists the most frequent and folds
    the rest into one row, so the adapters page stays small and its totals stay right."""
    extra = queries.MAX_REJECTION_RULES * 4
    async with ready.acquire() as conn:
        tx = conn.transaction()  # rolled back: the session's register is left as it was
        await tx.start()
        try:
            before = await queries.rejections(conn)
            assert before is not None
            await conn.execute(
                "INSERT INTO adapter_rejections (adapter, family, rule) "
                "SELECT 'welfare', 'referral', 'f' || i || ': invalid' FROM generate_series(1, $1) AS i",
                extra,
            )
            rows = await queries.rejections(conn)
        finally:
            await tx.rollback()
    assert rows is not None and len(rows) == queries.MAX_REJECTION_RULES + 1
    assert sum(r.count for r in rows) == sum(r.count for r in before) + extra
    assert all(r.rules == 1 for r in rows[:-1])
    assert rows[-1].rules == sum(r.rules for r in before) + extra - queries.MAX_REJECTION_RULES


async def test_logout_ends_the_session_on_the_server(ready: asyncpg.Pool, console: RunningConsole) -> None:
    """A signed cookie alone stays valid until it expires: logout must revoke it server-side (issue 10)."""
    operator = await _client(ready, OrgKind.OPERATOR, "*", {Role.OPERATE})
    async with httpx.AsyncClient(base_url=console.url) as http:
        assert (await http.post("/login", data={"token": operator})).status_code == 303
        page = await http.get("/")
        assert page.status_code == 200
        cookie = http.cookies["ittai_console"]
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        forged = csrf[:-1] + ("y" if csrf.endswith("x") else "x")  # one token in 64 ends in "x" already
        assert (await http.post("/logout", data={"csrf": forged})).status_code == 403
        assert (await http.post("/logout", data={"csrf": csrf})).status_code == 303
    async with httpx.AsyncClient(base_url=console.url, cookies={"ittai_console": cookie}) as copied:
        refused = await copied.get("/")
        assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
