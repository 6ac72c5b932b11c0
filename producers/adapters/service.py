"""The adapters' core: acceptance (``producers.ingest``: validate → authorise → seal → enqueue) with
idempotency, for HTTP requests and batch files.

Acceptance means durability: events and their idempotency keys are written in one PostgreSQL
transaction with the outbox rows, so a 202 sent after ``accept_events`` returns survives a crash of the
adapter or an outage of the broker, and a retried request finds its key and creates nothing.

Validation runs before any data key exists (``producers.submission.check``: once, against the contract
with the personal block in clear); only an event that is valid and authorised is sealed with the person's
real key. A rejected request therefore leaves nothing behind except a value-free rejection record. HTTP
requests are committed by a group committer (many concurrent requests, one transaction); file chunks are
pipelined (the next chunk validated, authorised and sealed while the previous one commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import asyncpg
import orjson
from prometheus_client import Counter

from contracts.envelope import PERSONAL_MODELS, Event, Family
from domain.provenance import INTAKE
from infra.auth import AuthError, Principal
from infra.codecs.csv_rows import Chunk, FileError, ParsedRow, read_chunks
from infra.codecs.field_errors import MAX_ERRORS, MAX_RULE_CHARS, FieldError, clip
from infra.config import Settings
from infra.crypto import KeyStore, SealingKeys, derived_key, forget_everywhere, stored_keys
from infra.db import OUTBOX_CHANNEL, copy_to_stage
from infra.gc import fewer_collections
from infra.logging import get_logger
from infra.metrics import EVENTS_ACCEPTED
from infra.outbox_rows import outbox_columns
from infra.tracing import current_trace_context
from producers.adapters.authorization import Adapter, Context, authorize, site_of
from producers.adapters.csv_chunks import FamilyRows, HeadersJson, Row, seal_rows
from producers.holders import (
    ERASED_MEANWHILE,
    REGISTERS,
    ErasedMeanwhile,
    fence_rows,
    holder_rows,
    registers_args,
    registers_from,
)
from producers.outbox import accept_sealed

REQUESTS = Counter(
    "ittai_adapter_requests_total", "Adapter requests by outcome", ["adapter", "family", "outcome"]
)
REJECTIONS = Counter(
    "ittai_adapter_rejections_total",
    "Rejected events and rows by rule class",
    ["adapter", "family", "rule_class"],
)
CSV_ROWS = Counter(
    "ittai_adapter_csv_rows_total", "Batch file rows by outcome", ["adapter", "family", "outcome"]
)

CHUNK_ROWS = 2000
# Rows judged, authorised or sealed between chances for the previous chunk's commit to move on.
_YIELD_EVERY = 100


class Rejected(Exception):
    """422: the input breaks the contract; ``errors`` say where and how."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(e.operator_rule for e in errors))
        self.errors = list(errors)


class IdempotencyConflict(Exception):
    """409: the key was already used for a different request."""

    def __init__(self, family: str) -> None:
        # The key is the client's own text (a header): named, never repeated.
        super().__init__(f"Idempotency-Key: already used for a different {family} request")
        self.reason = str(self)


@dataclass(frozen=True, slots=True)
class Accepted:
    event_ids: list[str]
    replayed: bool = False


@dataclass
class ImportSummary:
    encoding: str = ""
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0  # rows already imported (same content), from an earlier file or this one
    rejected: int = 0
    errors: list[tuple[int, FieldError]] = field(default_factory=list)
    file_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "rows": self.rows,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "file_error": clip(self.file_error, MAX_RULE_CHARS) if self.file_error else None,
            "errors": [
                {"line": line, **c, "message": clip(f"line {line}: {c['message']}", MAX_RULE_CHARS)}
                for line, c in ((line, e.for_client()) for line, e in self.errors[:MAX_ERRORS])
            ],
            **(
                {"errors_total": len(self.errors), "errors_shown": MAX_ERRORS}
                if len(self.errors) > MAX_ERRORS
                else {}
            ),
        }


def request_digest(secret: bytes | hmac.HMAC, family: Family, body: Any) -> bytes:
    """The request's fingerprint for idempotency: an HMAC under a server secret, because the body holds a
    name and a birth date, and a bare hash of a few guessable fields can be reversed by trying them.

    ``secret`` may be an HMAC keyed with it already (``hmac.new(secret, digestmod="sha256")``), copied
    for each digest: a file's rows are digested by the thousand, and keying an HMAC afresh (OpenSSL 3
    looks the algorithm up each time) cost more than digesting the row."""
    message = family.value.encode() + b"\x00" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    if isinstance(secret, bytes):
        return hmac.digest(secret, message, "sha256")
    keyed = secret.copy()
    keyed.update(message)
    return keyed.digest()


class AdapterService:
    def __init__(self, adapter: Adapter, settings: Settings, pool: asyncpg.Pool, keystore: KeyStore) -> None:
        self.adapter = adapter
        self.settings = settings
        self.pool = pool
        self.keystore = keystore
        self.digest_key = derived_key(settings.master_key, "idempotency")
        self.committer = _GroupCommitter(self)
        self._judges: dict[Family, FamilyRows] = {}
        self._accepted_counters: dict[Family, Any] = {}

    # --- rejections (value-free) -----------------------------------------------------------------

    async def record_rejections(self, family: str, rules: Sequence[tuple[str, str]]) -> None:
        """``rules`` are (operator_rule, rule_class) pairs: no values, ever. At most ``MAX_ERRORS`` of
        them are kept, as in the client's answer: one request cannot fill the register."""
        if not rules:
            return
        rules = rules[:MAX_ERRORS]
        for _, rule_class in rules:
            REJECTIONS.labels(self.adapter.value, family, rule_class).inc()
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO adapter_rejections (adapter, family, rule) SELECT $1, $2, unnest($3::text[])",
                self.adapter.value,
                family,
                [r for r, _ in rules],
            )
        # Looked up per call (rejections are rare): a cached logger would ignore test log capture.
        get_logger("adapters").warning(
            "input rejected",
            adapter=self.adapter.value,
            family=family,
            count=len(rules),
            rules=sorted({r for r, _ in rules})[:10],
        )

    async def reject(self, family: Family, errors: Sequence[FieldError]) -> Rejected:
        REQUESTS.labels(self.adapter.value, family.value, "rejected").inc()
        await self.record_rejections(family.value, [(e.operator_rule, e.rule_class) for e in errors])
        return Rejected(errors)

    async def forbid(self, family: str, exc: AuthError) -> AuthError:
        REQUESTS.labels(
            self.adapter.value, family, "forbidden" if exc.status == 403 else "unauthenticated"
        ).inc()
        await self.record_rejections(
            family, [(f"(client): {exc.status}", "forbidden" if exc.status == 403 else "unauthenticated")]
        )
        return exc

    # --- HTTP: one event or an atomic batch ---------------------------------------------------------

    async def accept_events(
        self,
        principal: Principal,
        family: Family,
        bodies: Sequence[Any],
        idempotency_key: str | None,
        *,
        batch: bool,
    ) -> Accepted:
        """Validate all, authorise all, then enqueue all or none. Raises Rejected, AuthError, IdempotencyConflict.

        Each body is judged as a batch file's row is (``csv_chunks.FamilyRows.judge_body``): by the
        contract's msgspec structs, the refusals and their reasons the contract's own."""
        judge = self._rows(family)
        rows: list[Row] = []
        errors: list[FieldError] = []
        for i, body in enumerate(bodies):
            result = judge.judge_body(body, (i,) if batch else ())
            if isinstance(result, list):
                errors.extend(result)
            else:
                rows.append(result)
        if errors:
            raise await self.reject(family, errors)
        digest = (
            request_digest(self.digest_key, family, list(bodies) if batch else bodies[0])
            if idempotency_key
            else b""
        )
        idem = (principal.organisation, idempotency_key, digest, family.value) if idempotency_key else None
        try:
            # Authorised, sealed and enqueued by the group commit: the registers authorisation reads are
            # loaded once for every request of the group, on the connection that commits it.
            event_ids = await self.committer.commit(_Unit(principal, family, rows, idem))
        except AuthError as exc:  # refused (403), or revoked since the credential was cached (401)
            raise await self.forbid(family.value, exc) from None
        if event_ids is None:
            # The key was taken (a retry, or a concurrent request committed first): answer as it did, or
            # 409 if it was for another body. The group commit looked it up before making any data key.
            async with self.pool.acquire() as conn:
                try:
                    earlier = await self._replay(conn, principal, family, idempotency_key or "", digest)
                except AuthError as exc:
                    raise await self.forbid(family.value, exc) from None
            if earlier is None:  # the record expired since the group's read: gone, so the key is free
                return await self.accept_events(principal, family, bodies, idempotency_key, batch=batch)
            return earlier
        self._accepted(family).inc()
        return Accepted(event_ids)

    def authorise_unit(self, unit: _Unit, loaded: Context) -> list[str] | AuthError:
        """Step 2 for one request: the sources of its events, or the refusal of the first it may not
        publish (the request is refused as a whole). Each request is judged on the registers as loaded
        (its own copy of its people's holders and fences), as if it were alone: a request refused, or
        answered from its idempotency key, must not lend another request of its group a holder."""
        people = {r.subject for r in unit.rows}
        ctx = Context(
            sites=loaded.sites,
            holders={p: dict(loaded.holders[p]) for p in people if p in loaded.holders},
            fences={p: loaded.fences[p] for p in people if p in loaded.fences},
            erased=loaded.erased,
            now=loaded.now,
        )
        sources: list[str] = []
        for r in unit.rows:
            try:
                sources.append(authorize(self.adapter, unit.principal, unit.family, r.view, ctx))
            except AuthError as exc:
                return exc
        return sources

    async def _replay(
        self, conn: asyncpg.Connection, principal: Principal, family: Family, key: str, digest: bytes
    ) -> Accepted | None:
        row = await conn.fetchrow(
            "SELECT k.request_hash, k.family, k.event_ids, c.revoked_at "
            "FROM (SELECT revoked_at FROM clients WHERE client_id = $3) AS c "
            "LEFT JOIN idempotency_keys AS k ON k.organisation = $1 AND k.key = $2 AND k.expires_at > now()",
            principal.organisation,
            key,
            principal.client_id,
        )
        if row is None or row["revoked_at"] is not None:  # removed (no row), or revoked, since it was read
            known = {} if row is None else {principal.client_id: row["revoked_at"]}
            raise refusals([principal.client_id], known)[principal.client_id]
        if row["request_hash"] is None:
            return None
        if bytes(row["request_hash"]) != digest or row["family"] != family.value:
            REQUESTS.labels(self.adapter.value, family.value, "conflict").inc()
            await self.record_rejections(family.value, [("Idempotency-Key: reused", "idempotency conflict")])
            raise IdempotencyConflict(row["family"])
        REQUESTS.labels(self.adapter.value, family.value, "replayed").inc()
        return Accepted(list(row["event_ids"]), replayed=True)

    # --- batch files --------------------------------------------------------------------------------

    async def import_csv(
        self,
        principal: Principal,
        family: Family,
        content: BinaryIO | bytes,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportSummary:
        """Accept a file's valid rows (each row once, ever), report the others. Raises FileError for the file.

        ``content`` is a seekable binary file (an upload spooled to disk, a file opened by ``hub import``),
        read a block at a time: twice, once to find its encoding and once for its rows; the file is
        never in memory whole.

        Chunks are pipelined: while one chunk's transaction is in PostgreSQL, the next one is parsed,
        validated, authorised and sealed here (``_seal_chunk`` says how it still sees the registers as that
        transaction leaves them). Transactions still happen one at a time and in file order (a chunk starts
        its transaction only after the previous one committed), so a person's events keep the file's order.
        """
        with fewer_collections():
            return await self._import_csv(principal, family, content, progress)

    async def _import_csv(
        self,
        principal: Principal,
        family: Family,
        content: BinaryIO | bytes,
        progress: Callable[[int, int], None] | None,
    ) -> ImportSummary:
        summary = ImportSummary()
        encoding, lines, header, chunks = read_chunks(
            family.value,
            content,
            chunk_rows=min(CHUNK_ROWS, _YIELD_EVERY),  # parts of a chunk (``_prepare_chunk``)
            max_rows=self.settings.max_file_rows,
            max_columns=self.settings.max_file_columns,
        )
        summary.encoding = encoding
        total = max(lines - 1, 1)
        writing: asyncio.Task[None] | None = None
        carried: _Sealed | None = None  # the previous chunk: its registers as authorisation left them

        async def written() -> None:
            nonlocal writing
            if writing is not None:
                task, writing = writing, None
                await task
                if progress:
                    progress(summary.rows, max(total, summary.rows))

        # Chunks are judged ahead (one waiting at most: memory stays bounded), so that judging goes on
        # while a chunk's authorisation waits for PostgreSQL (its registers, its data keys).
        ahead: asyncio.Queue[_Chunk | Exception | None] = asyncio.Queue(maxsize=1)

        async def judging() -> None:
            judged = 0
            try:
                for index in itertools.count():
                    limit = _chunk_rows(index, total - judged)
                    chunk = await self._prepare_chunk(family, header.label_for, chunks, limit)
                    await ahead.put(chunk)
                    if chunk is None or chunk.error is not None:
                        return
                    judged += chunk.rows
            except Exception as exc:  # raised where the chunks are taken
                await ahead.put(exc)

        judge = asyncio.create_task(judging())
        try:
            while True:
                prepared = await ahead.get()
                if isinstance(prepared, Exception):
                    raise prepared
                if prepared is None:
                    break
                try:
                    sealed = await self._seal_chunk(principal, family, prepared, carried)
                finally:
                    # The previous chunk's transaction ends before this one's begins (file order), and
                    # before a revocation this chunk's read saw stops the import.
                    await written()
                carried = sealed
                writing = asyncio.create_task(self._write_chunk(principal, family, sealed, summary))
                if prepared.error is not None:
                    await written()
                    summary.file_error = str(prepared.error)
                    break
            await written()
        except _Revoked as stop:  # the uploader's credential was revoked while its file was imported
            await self.forbid(family.value, stop.refusal)
            summary.file_error = (
                f"line {stop.line}: {stop.refusal.reason}; rows from this line on were not imported"
            )
        finally:
            for task in (judge, writing):  # failed or cancelled meanwhile: do not leave them running
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        CSV_ROWS.labels(self.adapter.value, family.value, "accepted").inc(summary.accepted)
        CSV_ROWS.labels(self.adapter.value, family.value, "duplicate").inc(summary.duplicates)
        CSV_ROWS.labels(self.adapter.value, family.value, "rejected").inc(summary.rejected)
        return summary

    async def _prepare_chunk(
        self,
        family: Family,
        label_for: Callable[[tuple[int | str, ...]], str | None],
        chunks: Iterator[Chunk],
        limit: int,
    ) -> _Chunk | None:
        """Judge the next chunk, of ``limit`` rows (``_chunk_rows``; ``None`` at the end of the file). CPU only, but read, parsed and judged a
        part of ``_YIELD_EVERY`` rows at a time, yielding in between: the previous chunk's transaction
        waits for this loop to read each answer of PostgreSQL, and it sat idle while 2,000 rows were
        parsed in one go."""
        chunk: _Chunk | None = None
        judge = self._rows(family)
        # The row keys' HMAC, keyed once a file and fed the family once (``_row_key``).
        secret = hmac.new(self.digest_key, family.value.encode() + b"\x00", "sha256")
        while chunk is None or (chunk.rows < limit and chunk.error is None):
            await asyncio.sleep(0)
            parsed, error = next(chunks, ([], None))
            if not parsed and error is None:
                break
            if chunk is None:
                chunk = _Chunk(first_line=parsed[0].line if parsed else 0)
            chunk.rows += len(parsed)
            chunk.error = error
            fit: list[tuple[int, dict[str, Any], str]] = []
            for row in parsed:
                if row.errors:
                    chunk.bad.extend((row.line, e) for e in row.errors)
                else:
                    fit.append((row.line, row.data, _row_key(secret, row)))
            judged = judge.judge(fit, lambda dotted: _label(label_for, dotted))
            chunk.valid += judged.rows
            chunk.bad += judged.bad
        return chunk

    def _accepted(self, family: Family) -> Any:
        """The family's ``accepted`` request counter (looked up once: ``labels`` took a lock per request)."""
        counter = self._accepted_counters.get(family)
        if counter is None:
            counter = self._accepted_counters[family] = REQUESTS.labels(
                self.adapter.value, family.value, "accepted"
            )
        return counter

    def value_of(self, event: Event) -> bytes:
        """An accepted request's event as its outbox value: its family's quick spelling of
        ``contracts.envelope.data_value``'s bytes (``FamilyRows.value_of``, as a file's rows)."""
        return self._rows(event.family).value_of(event)

    def _rows(self, family: Family) -> FamilyRows:
        judge = self._judges.get(family)
        if judge is None:
            judge = self._judges[family] = FamilyRows(family)
        return judge

    async def _seal_chunk(
        self, principal: Principal, family: Family, chunk: _Chunk, carried: _Sealed | None
    ) -> _Sealed:
        """Authorise a judged chunk's rows and seal the events of those authorised, while the previous
        chunk's transaction may still be in PostgreSQL (``_write_chunk``).

        The registers are read now, so they may lack what that transaction writes: the holders its
        registrations and referrals make (P3) and the fences its withdrawals move (P7). Those are the
        ones its authorisation added to its ``Context`` (``carried``), and are added here for the people
        of this chunk (a chunk's people only: memory stays bounded); the erasure register is read again
        in this chunk's transaction (P9), the uploader's revocation too. So are the data keys: a person
        of this chunk with none stored gets the key the previous chunk made for them, if it did, and a
        fresh one otherwise; the chunk's transaction stores it, or finds it stored (``accept_file_rows``)."""
        bad = chunk.bad
        accepted: list[Row] = []
        sources: list[str] = []
        events: list[Event] = []
        async with generic_plans(self.pool) as conn:
            sites = [site_of(family, r.view) for r in chunk.valid]
            persons = [r.subject for r in chunk.valid]
            read = await conn.fetchrow(
                _CHUNK_READS,
                ",".join(set(sites)),
                ",".join(set(persons)),
                family is Family.CONSENT,
                principal.client_id,
                family in PERSONAL_MODELS,
            )
        assert read is not None
        gone = refusals([principal.client_id], {client: at for client, at in read["clients"]})
        if gone:
            raise _Revoked(chunk.first_line, gone[principal.client_id])
        ctx = Context(*registers_from(read))
        if carried is not None:
            _carry(carried.ctx, ctx, persons)
        for n, row in enumerate(chunk.valid, start=1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the previous chunk's transaction moves on meanwhile
            try:
                sources.append(authorize(self.adapter, principal, family, row.view, ctx))
            except AuthError as exc:
                bad.append((row.line, FieldError("(row)", exc.reason, None, "forbidden")))
                continue
            accepted.append(row)
        people_set = {r.subject for r in accepted if r.personal is not None}
        people = sorted(people_set)
        stored = [(p, w) for p, w in read["stored_keys"] if p in people_set]
        made = carried.sealing if carried is not None else None
        if made is not None and made.fresh:
            have = {p for p, _ in stored}
            again = [p for p in people if p in made.fresh and p not in have]
            sealing = self.keystore.sealing_keys(
                stored, [p for p in people if p not in made.fresh or p in have]
            )
            for p in again:  # the previous chunk's key: stored by its transaction, or refused with it
                sealing.keys[p] = made.keys[p]
                sealing.fresh[p] = made.fresh[p]
        else:
            sealing = self.keystore.sealing_keys(stored, people)
        for start in range(0, len(accepted), _YIELD_EVERY):
            await asyncio.sleep(0)
            part = slice(start, start + _YIELD_EVERY)
            events += seal_rows(family, accepted[part], sources[part], sealing.keys)
        # Staged here, not by the chunk's transaction: the previous chunk's is in PostgreSQL meanwhile.
        staged = await _staged(accepted, events, self.settings.topic_namespace, self._rows(family))
        return _Sealed(chunk, accepted, sources, events, staged, sealing, ctx)

    async def _write_chunk(
        self, principal: Principal, family: Family, sealed: _Sealed, summary: ImportSummary
    ) -> None:
        """A sealed chunk's transaction (``accept_file_rows``): its events into the outbox, each row once
        (row keys). Rows of a person whose data key another acceptance stored meanwhile are sealed again
        under that key and written in a transaction of their own, before the next chunk's."""
        chunk, rows, sources, events, staged, sealing = (
            sealed.chunk, sealed.rows, sealed.sources, sealed.events, sealed.staged, sealed.sealing
        )  # fmt: skip
        bad = chunk.bad
        origin = f"{self.adapter.value}-csv"
        accepted = duplicates = 0
        for _ in range(_GroupCommitter.MAX_TRIES):
            if not events:
                break
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    verdict = await _accept_file_rows(
                        conn, principal, family, staged, events, sealing.fresh, origin
                    )
                if isinstance(verdict, AuthError):
                    raise _Revoked(chunk.first_line, verdict)
                erased, conflicted, kept = verdict
                if erased:
                    forget_everywhere(erased)  # out of this process's memory (the others follow the erasure)
                    refused = FieldError("(row)", ERASED_MEANWHILE, None, "forbidden")
                    bad.extend((r.line, refused) for r in rows if r.subject in erased)
                # A fresh key is stored only for a person with a row accepted (migration 048).
                kept_people = {rows[n].subject for n in kept}
                self.keystore.remember(
                    sealing,
                    [
                        p
                        for p in sealing.keys.keys() - erased - conflicted
                        if p not in sealing.fresh or p in kept_people
                    ],
                )
                EVENTS_ACCEPTED.labels(origin, family.value).inc(len(kept))  # one family a file
                accepted += len(kept)
                again = [i for i, r in enumerate(rows) if r.subject in conflicted]
                duplicates += len(rows) - len(kept) - len(again) - sum(r.subject in erased for r in rows)
                if not again:
                    break
                rows, sources = [rows[i] for i in again], [sources[i] for i in again]
                people = sorted({r.subject for r in rows if r.personal is not None})
                keys = await self.keystore.keys_for(conn, people)  # stored now: read back
                sealing = SealingKeys(keys, {}, sealing.epoch)
                events = seal_rows(family, rows, sources, keys)
                staged = await _staged(rows, events, self.settings.topic_namespace, self._rows(family))
        else:
            raise RuntimeError("a data key changed under every try of this chunk")
        summary.rows += chunk.rows
        summary.accepted += accepted
        summary.duplicates += duplicates
        bad.sort(key=lambda item: item[0])
        summary.rejected += len({line for line, _ in bad})
        summary.errors.extend(bad)
        await self.record_rejections(family.value, [(e.operator_rule, e.rule_class) for _, e in bad])


def _chunk_rows(index: int, remaining: int) -> int:
    """How many rows a file's ``index``-th chunk takes, ``remaining`` rows (about: the file's line feeds)
    not judged yet. A chunk's transaction overlaps the next chunk's judging and sealing, but the first
    chunk is judged with no transaction to overlap and the last one written with nothing left to judge:
    PostgreSQL, or this process, waits that long. So the first chunks grow from an eighth of CHUNK_ROWS
    and the last ones take half of what is left, down to one part (``_YIELD_EVERY`` rows)."""
    part = min(CHUNK_ROWS, _YIELD_EVERY)
    growing = CHUNK_ROWS >> max(0, 3 - index)
    return min(CHUNK_ROWS, max(part, min(growing, remaining // 2)))


def _carry(previous: Context, ctx: Context, persons: Iterable[str]) -> None:
    """Add to ``ctx`` (registers just read) what the previous chunk's authorisation added to its own
    (``previous``) about ``persons``: holders gained (the earliest date stands) and fences moved (the
    latest stands), as ``authorize`` adds them, in case its transaction has not committed yet."""
    for person in set(persons):
        held = previous.holders.get(person)
        if held:
            mine = ctx.holders.setdefault(person, {})
            for holder, since in held.items():
                mine[holder] = min(mine.get(holder, since), since)
        fenced = previous.fences.get(person)
        if fenced is not None:
            ctx.fences[person] = max(ctx.fences.get(person, fenced), fenced)


# Idempotency records expire (7 days, the column's default): an expired record is gone for every purpose,
# so a key or file row seen again after that is new. Expired rows of the keys at hand are deleted in the
# inserting transaction (the periodic purge takes the rest): a group commit's by migration 021's
# ``accept_events``, a file chunk's row keys by ``accept_file_rows`` (since 041 only when it meets one).
_PURGE_EVERY_S = 300.0

# A file chunk's events, staged by binary COPY for ``accept_file_rows`` (migration 048 reads this table
# by name): the driver encodes them in C, where six arrays it encoded element by element. The headers go
# as JSON text, checked once by the function's cast to json (the outbox keeps them as written: 059).
_FILE_ROWS = "n int, subject text, topic text, headers text, value bytea, event_id text, row_key text"
# The fresh data keys' people ($4) and wrapped keys ($5, hex) as comma-separated texts (see _CHUNK_READS).
_ACCEPT_FILE_ROWS = (
    "SELECT * FROM accept_file_rows($1, $2, $3, string_to_array($4::text, ','), "
    "ARRAY(SELECT decode(w, 'hex') FROM unnest(string_to_array($5::text, ',')) WITH ORDINALITY AS t(w, n) "
    f"ORDER BY n), {', '.join(f'${n}' for n in range(6, 18))})"
)


async def _staged(
    rows: Sequence[Row], events: Sequence[Event], namespace: str, judge: FamilyRows
) -> list[tuple[Any, ...]]:
    """The ``file_rows_stage`` records of a chunk's events, made a part at a time (CPU only: the previous
    chunk's transaction moves on in between); their values written by the family's ``judge``."""
    staged: list[tuple[Any, ...]] = []
    headers_of = HeadersJson()
    for start in range(0, len(events), _YIELD_EVERY):
        await asyncio.sleep(0)
        part = slice(start, start + _YIELD_EVERY)
        topics, headers, values, ids = outbox_columns(events[part], namespace, judge.value_of, headers_of)
        staged += zip(
            range(start, start + len(ids)),
            (e.subject for e in events[part]),
            topics,
            headers,
            values,
            ids,
            (r.key for r in rows[part]),
            strict=True,
        )
    return staged


async def _accept_file_rows(
    conn: asyncpg.Connection,
    principal: Principal,
    family: Family,
    staged: list[tuple[Any, ...]],
    events: Sequence[Event],
    fresh_keys: Mapping[str, bytes],
    origin: str,
) -> tuple[frozenset[str], frozenset[str], list[int]] | AuthError:
    """A file chunk's acceptance, in the caller's transaction (migration 029, latest 048): the people erased and
    those whose data key was stored meanwhile (every row of theirs refused), and the indexes of the
    events accepted; or the uploader's refusal (revoked or removed: its 401, as ``refusals`` words it),
    with nothing written. ``staged``: the events' records for ``file_rows_stage`` (``_staged``)."""
    await copy_to_stage(conn, "file_rows_stage", _FILE_ROWS, staged)
    # A file holds one family: only intake rows make holders, only consent rows move fences.
    holders = holder_rows(events) if family.value in INTAKE else []
    fences = fence_rows(events) if family is Family.CONSENT else []
    verdict = await conn.fetchrow(
        _ACCEPT_FILE_ROWS,
        principal.client_id, principal.organisation, family.value,
        ",".join(fresh_keys), ",".join(w.hex() for w in fresh_keys.values()),
        [h[0] for h in holders], [h[1] for h in holders], [h[2] for h in holders],
        [h[3] for h in holders], [h[4] for h in holders], [h[5] for h in holders],
        [f[0] for f in fences], [f[1] for f in fences], [f[2] for f in fences], [f[3] for f in fences],
        origin, OUTBOX_CHANNEL,
    )  # fmt: skip
    assert verdict is not None
    cid = principal.client_id
    if refused := refusals([cid], {cid: verdict["revoked_at"]} if verdict["known"] else {}):
        return refused[cid]
    return frozenset(verdict["erased"]), frozenset(verdict["conflicted"]), verdict["accepted"]


@contextlib.asynccontextmanager
async def generic_plans(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection on which every prepared statement keeps one generic plan (until the pool
    resets it on release). Acceptance's statements look rows up by primary key in arrays of keys
    (``= ANY($1)``), which a generic plan does as well as a custom one; but PostgreSQL kept planning
    them afresh on every execution, and planning cost more than running them: the group commit's read
    of registers, revocations and keys took 350 µs of PostgreSQL's CPU per execution, 100–160 µs with
    its generic plan (measured on this project's 2-core machine)."""
    async with pool.acquire() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        yield conn


def revoked(client_id: str, at: datetime) -> AuthError:
    """The 401 for a revoked credential (the same words as ``infra.auth.authenticate``)."""
    return AuthError(401, f"credentials of client {client_id} were revoked at {at.isoformat()}")


def refusals(client_ids: Iterable[str], revoked_at: Mapping[str, datetime | None]) -> dict[str, AuthError]:
    """Clients among ``client_ids`` that were revoked (or removed) since they authenticated, given the
    ``revoked_at`` of those still in the register: a credential cached by the HTTP layer never outlives
    its revocation."""
    refused: dict[str, AuthError] = {}
    for client_id in sorted(set(client_ids)):
        if client_id not in revoked_at:
            refused[client_id] = AuthError(401, "unknown client or wrong secret")
        elif (at := revoked_at[client_id]) is not None:
            refused[client_id] = revoked(client_id, at)
    return refused


# A file chunk's reads before authorisation: the uploader's revocation ($4), the registers ($1–$3) and, if
# the family has personal blocks ($5), its people's stored data keys (``stored_keys``, for the same array
# of people: the driver encodes an array element by element, and one of 2,000 people once is enough).
# Its sites and people ($1, $2) are comma-separated texts, not arrays (the driver encodes an array element by
# element, a few type checks each): site ids and person keys, as the contract checked them, hold no comma.
_CHUNK_READS = (
    (
        "SELECT ARRAY(SELECT (client_id, revoked_at) FROM clients WHERE client_id = $4) AS clients, "
        "ARRAY(SELECT (person_key, wrapped) FROM person_data_keys "
        f"WHERE $5 AND person_key = ANY($2::text[]) AND version = 1) AS stored_keys, {REGISTERS}"
    )
    .replace("$1::text[]", "string_to_array($1::text, ',')")
    .replace("$2::text[]", "string_to_array($2::text, ',')")
)


class _Revoked(Exception):
    """The uploader's credential was revoked (or removed) before this chunk committed."""

    def __init__(self, line: int, refusal: AuthError) -> None:
        super().__init__(refusal.reason)
        self.line = line
        self.refusal = refusal


# The group commit's reads before the accepting transaction, in one statement: the registers ($1–$3,
# ``holders.REGISTERS``), the clients' revocations ($4), the idempotency keys already taken ($5, $6) and
# the stored data keys of the people with a personal block ($7).
_GROUP_READS = (
    "SELECT ARRAY(SELECT (client_id, revoked_at) FROM clients WHERE client_id = ANY($4::text[])) AS clients, "
    "ARRAY(SELECT (organisation, key) FROM idempotency_keys WHERE expires_at > now() "
    "AND (organisation, key) IN (SELECT * FROM unnest($5::text[], $6::text[]))) AS taken, "
    f"{stored_keys(7)}, {REGISTERS}"
)


@dataclass(slots=True)
class _Chunk:
    """Up to CHUNK_ROWS rows of a file, parsed and validated, waiting for their transaction."""

    rows: int = 0
    first_line: int = 0  # the file line of its first row
    valid: list[Row] = field(default_factory=list)  # judged by the contract, not yet authorised
    bad: list[tuple[int, FieldError]] = field(default_factory=list)
    error: FileError | None = None  # the file could not be read past these rows


@dataclass(slots=True)
class _Sealed:
    """A chunk after authorisation: its authorised rows, their sources and their events, sealed and staged,
    waiting for their transaction; the data keys they were sealed with (the fresh ones to store); and the
    registers its authorisation read and added to."""

    chunk: _Chunk
    rows: list[Row]
    sources: list[str]
    events: list[Event]
    staged: list[tuple[Any, ...]]  # the events' file_rows_stage records (``_staged``)
    sealing: SealingKeys
    ctx: Context


async def seal_units(
    keystore: KeyStore, units: Sequence[_Unit], sources: Sequence[Sequence[str]], stored: Sequence[Any]
) -> tuple[list[list[Event]], SealingKeys]:
    """Step 3 for a group's authorised requests: each one's events, personal blocks sealed with their
    people's data keys — the ``stored`` ones read with the registers, fresh ones for the others (stored by
    the accepting transaction, ``outbox.accept_sealed``)."""
    people = [r.subject for u in units for r in u.rows if r.personal is not None]
    sealing = keystore.sealing_keys(stored, people)
    per_unit = [seal_rows(u.family, u.rows, s, sealing.keys) for u, s in zip(units, sources, strict=True)]
    return per_unit, sealing


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(slots=True)
class _Unit:
    """One request's events, validated, waiting for the next group commit (which authorises them)."""

    principal: Principal
    family: Family
    rows: list[Row]
    idem: tuple[str, str, bytes, str] | None  # organisation, key, request digest, family
    # The request's trace context (traceparent, tracestate), taken where the unit is made: the group
    # commit runs in another task.
    trace: tuple[str | None, str | None] = field(default_factory=current_trace_context)
    done: asyncio.Future[list[str] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    tries: int = 0  # accepting transactions that left it out to be sealed again


class _GroupCommitter:
    """Commits concurrent requests together: one transaction (and one fsync) for everything that arrived
    while a previous commit ran. Each request still gets its own answer, and only after its commit;
    a unit whose idempotency key was taken by a concurrent request is answered ``None`` (replay it).

    Up to ``FLUSHERS`` group commits run at once, each on its own connection. One: the adapter does not
    sit idle while its group waits for PostgreSQL (it reads and judges the next requests meanwhile), and
    a group's statements and commit cost about the same whatever its size, so fewer, larger groups cost
    less per event. A second flusher split a stream of single events into groups of 10–12 where one
    makes groups of 16–19 (``bench_ingest``, concurrency 32, loaded 2-core machine, interleaved runs);
    session 7 had measured the same with a third (commits per event 0.36 with two, 0.43 with three).
    Concurrent requests had no order between them anyway; a request sent after another's 202 is
    committed after it (and gets a later outbox id), so a person's events keep the order in which they
    were acknowledged.
    """

    MAX_EVENTS = 2000
    MAX_TRIES = 5
    FLUSHERS = 1
    IDLE_S = 0.5  # how long a flusher keeps its connection for the next request once none is pending

    def __init__(self, service: AdapterService) -> None:
        self.service = service
        self.pending: list[_Unit] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.next_purge = 0.0
        self.idle: deque[asyncio.Future[None]] = deque()  # flushers waiting, connection in hand

    async def commit(self, unit: _Unit) -> list[str] | None:
        self.pending.append(unit)
        # A flusher that has ended is counted until its done-callback runs, which may come after this
        # request in the same turn of the loop: only the running ones count.
        if not self._wake_one() and sum(not t.done() for t in self.tasks) < self.FLUSHERS:
            task = asyncio.create_task(self._drain())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await unit.done

    def _wake_one(self) -> bool:
        """Wake one flusher waiting for requests, if one is. One, not all: the others would only find
        nothing left to take and wait again (each arrival woke every idle flusher, 2% of the adapter's
        CPU under a stream of single events)."""
        while self.idle:
            waiter = self.idle.popleft()
            if not waiter.done():  # done: its wait ended by its deadline, or it was cancelled
                waiter.set_result(None)
                return True
        return False

    async def _drain(self) -> None:
        # One connection for a stream of commits: it goes back to the pool only after ``IDLE_S`` without
        # a request, or after a failure (each acquire after a release cost a session reset, a round trip
        # that was 7% of a single-event request's CPU).
        while self.pending:
            try:
                async with generic_plans(self.service.pool) as conn:
                    while self.pending or await self._next_arrival():
                        # One turn of the loop first: the requests it has read already but not run yet
                        # join this group instead of waiting for the next one (groups 16–19 events
                        # instead of 12–15 under a stream of single events).
                        await asyncio.sleep(0)
                        group = self._take()
                        try:
                            results = await self._flush(conn, group)
                        except Exception as exc:  # every waiting request learns of the failure
                            self._fail(group, exc)
                            break  # and the next group gets a fresh connection
                        for unit, result in results:
                            if not unit.done.done():
                                unit.done.set_result(result)
            except Exception as exc:  # no connection to be had: the next group fails, none hangs
                self._fail(self._take(), exc)

    async def _next_arrival(self) -> bool:
        """Wait up to ``IDLE_S`` for a request to commit (another flusher may take the first); False if
        none is pending by then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.IDLE_S
        while not self.pending and loop.time() < deadline:
            waiter: asyncio.Future[None] = loop.create_future()
            self.idle.append(waiter)
            timer = loop.call_at(deadline, _settle, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        return bool(self.pending)

    def _take(self) -> list[_Unit]:
        group: list[_Unit] = []
        size = 0
        while self.pending and (not group or size + len(self.pending[0].rows) <= self.MAX_EVENTS):
            unit = self.pending.pop(0)
            group.append(unit)
            size += len(unit.rows)
        return group

    @staticmethod
    def _fail(group: list[_Unit], exc: Exception) -> None:
        for unit in group:
            if not unit.done.done():
                unit.done.set_exception(exc)

    async def _flush(
        self, conn: asyncpg.Connection, group: list[_Unit]
    ) -> list[tuple[_Unit, list[str] | None]]:
        service = self.service
        if time.monotonic() >= self.next_purge:  # expired idempotency records hold digests of bodies
            self.next_purge = time.monotonic() + _PURGE_EVERY_S
            await conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= now()")
        # One round trip reads what decides every unit: its client's revocation (a unit whose client was
        # revoked since it authenticated is answered 401 and writes nothing), whether its idempotency key
        # is taken (a retry or a conflict: it answers from the stored result), the registers authorisation
        # reads, for all the group's events at once, and the data keys already stored to seal with.
        sites = [site_of(u.family, r.view) for u in group for r in u.rows]
        persons = [r.subject for u in group for r in u.rows]
        keyed_units = [u.idem for u in group if u.idem is not None]
        row = await conn.fetchrow(
            _GROUP_READS,
            *registers_args(sites, persons, fences=any(u.family is Family.CONSENT for u in group)),
            sorted({u.principal.client_id for u in group}),
            [idem[0] for idem in keyed_units],
            [idem[1] for idem in keyed_units],
            sorted({r.subject for u in group for r in u.rows if r.personal is not None}),
        )
        assert row is not None
        refused = refusals(
            {u.principal.client_id for u in group}, {client: at for client, at in row["clients"]}
        )
        if refused:
            for unit in group:
                if unit.principal.client_id in refused and not unit.done.done():
                    unit.done.set_exception(refused[unit.principal.client_id])
            group = [u for u in group if u.principal.client_id not in refused]
        taken = {(organisation, key) for organisation, key in row["taken"]}
        answered: list[tuple[_Unit, list[str] | None]] = [
            (u, None) for u in group if u.idem and (u.idem[0], u.idem[1]) in taken
        ]
        group = [u for u in group if not (u.idem and (u.idem[0], u.idem[1]) in taken)]
        # Step 2, authorise: each request judged alone on the registers as loaded (fences are read only
        # for consent, the one family they decide).
        loaded = Context(*registers_from(row))
        sources: list[list[str]] = []
        authorised: list[_Unit] = []
        for unit in group:
            try:
                verdict = service.authorise_unit(unit, loaded)
            except Exception as exc:  # a fault in judging one request answers that request, not its group
                if not unit.done.done():
                    unit.done.set_exception(exc)
                continue
            if isinstance(verdict, AuthError):
                if not unit.done.done():
                    unit.done.set_exception(verdict)
                continue
            authorised.append(unit)
            sources.append(verdict)
        group = authorised
        if not group:
            return answered
        per_unit, sealing = await seal_units(service.keystore, group, sources, row["stored_keys"])
        for unit, evs in zip(group, per_unit, strict=True):
            for i, e in enumerate(evs):  # the request's trace context (the commit runs in another task)
                evs[i] = e._replace(traceparent=unit.trace[0], tracestate=unit.trace[1])
        # The accepting transaction, in one round trip: the clients' revocation again (read FOR SHARE: one
        # committed since the first read refuses its client's requests, a later one waits for this
        # transaction), data keys, the erasure fence (P9 at commit: a request whose person was erased since
        # its authorisation is refused alone), idempotency keys, outbox rows and registers.
        verdicts = await accept_sealed(
            conn,
            per_unit,
            sealing.fresh,
            [(i, *u.idem) for i, u in enumerate(group) if u.idem is not None],
            clients=[u.principal.client_id for u in group],
            origin=f"{service.adapter.value}-adapter",
            namespace=service.settings.topic_namespace,
            value_of=service.value_of,
        )
        service.keystore.remember(sealing, sealing.keys.keys() - verdicts.keyless)
        # Answered as the first read answers a client revoked (or removed) since it authenticated: 401.
        revoked_since = refusals(
            verdicts.revoked, {client: at for client, at in verdicts.revoked.items() if at is not None}
        )
        results: list[tuple[_Unit, list[str] | None]] = []
        again: list[_Unit] = []
        for i, (unit, evs) in enumerate(zip(group, per_unit, strict=True)):
            subjects = {e.subject for e in evs}
            if i in verdicts.kept:
                results.append((unit, [e.id for e in evs]))
            elif unit.principal.client_id in revoked_since:
                if not unit.done.done():
                    unit.done.set_exception(revoked_since[unit.principal.client_id])
            elif subjects & verdicts.erased:
                if not unit.done.done():
                    unit.done.set_exception(ErasedMeanwhile())
            elif subjects & verdicts.conflicted:
                again.append(unit)  # a key was stored for its person meanwhile: sealed again under it
            else:
                results.append((unit, None))  # its idempotency key was taken: answered from the record
        if again:
            self._again(again)
        return answered + results

    def _again(self, units: list[_Unit]) -> None:
        """Units to seal again (a concurrent acceptance stored a data key for their person): first in line
        for the next group. A unit is tried ``MAX_TRIES`` times at most."""
        for unit in units:
            unit.tries += 1
            if unit.tries >= self.MAX_TRIES and not unit.done.done():
                unit.done.set_exception(RuntimeError("a data key changed under every try of this request"))
        self.pending[:0] = [u for u in units if not u.done.done()]


def _label(label_for: Callable[[tuple[int | str, ...]], str | None], dotted_field: str) -> str | None:
    loc = tuple(
        p for p in dotted_field.replace("[", ".").replace("]", "").split(".") if p and not p.isdigit()
    )
    return label_for(loc)


def _row_key(family_keyed: hmac.HMAC, row: ParsedRow) -> str:
    """Same content, same key: importing a file again (in any encoding) creates nothing new. The row's
    ``request_digest`` (hex): ``family_keyed`` is the HMAC under the server secret already fed the
    family's part of the message (``family\\x00``), copied for each row."""
    keyed = family_keyed.copy()
    keyed.update(orjson.dumps(row.data, option=orjson.OPT_SORT_KEYS))
    return keyed.hexdigest()
