"""The adapters' core: validate, authorise, seal and enqueue — with idempotency — for HTTP and batch files.

Acceptance means durability: events and their idempotency keys are written in one PostgreSQL
transaction with the outbox rows, so a 202 sent after ``accept_events`` returns survives a crash of the
adapter or an outage of the broker, and a retried request finds its key and creates nothing.

Validation runs before any data key exists: the personal block is validated in clear and the event
with a placeholder sealed block (the contract insists on one); only an event that is valid and
authorised is sealed with the person's real key. A rejected request therefore leaves nothing behind except a value-free rejection record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from contracts.envelope import Event, Family
from hub.auth import AuthError, Principal
from hub.config import Settings
from hub.crypto import KeyStore, seal
from hub.domain.csv_rows import FileError, ParsedRow, read_rows
from hub.domain.field_errors import FieldError, from_validation_error
from hub.logging import get_logger
from producers.adapters.authorization import Adapter, authorize, sites_to_resolve
from producers.outbox import enqueue
from producers.submission import PERSONAL_MODELS, Submission, to_event

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

_PLACEHOLDER_SEALED = {"alg": "A256GCM", "kid": "pdk-" + "0" * 32 + "-1", "nonce": "A" * 16, "ct": "A" * 22}
CHUNK_ROWS = 2000


class Rejected(Exception):
    """422: the input breaks the contract; ``errors`` say where and how."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(e.operator_rule for e in errors))
        self.errors = list(errors)


class IdempotencyConflict(Exception):
    """409: the key was already used for a different request."""

    def __init__(self, key: str, family: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different {family} request")
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
            "file_error": self.file_error,
            "errors": [
                {"line": line, **e.for_client(), "message": f"line {line}: {e.message}"}
                for line, e in self.errors
            ],
        }


@dataclass(frozen=True, slots=True)
class _Checked:
    event: Event  # sealed under the throwaway key
    personal: dict[str, Any] | None  # validated clear personal fields, to seal under the real key


def request_digest(family: Family, body: Any) -> bytes:
    return hashlib.sha256(
        family.value.encode() + b"\x00" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    ).digest()


def _validate(family: Family, body: Any, prefix: tuple[int | str, ...] = ()) -> _Checked | list[FieldError]:
    if not isinstance(body, dict):
        where = "".join(f"[{p}]" for p in prefix) or "(body)"
        return [FieldError(where, f"expected a JSON object, got {type(body).__name__}", None, "type")]
    errors: list[FieldError] = []
    personal = None
    model: type[BaseModel] | None = PERSONAL_MODELS.get(family)
    data = body
    if model is not None and isinstance(body.get("personal"), dict):
        try:
            personal = model.model_validate(body["personal"], extra="forbid").model_dump(
                mode="json", exclude_none=True
            )
        except ValidationError as exc:
            errors += from_validation_error(exc, prefix=(*prefix, "personal"))
        # The contract wants a sealed block here; the real one is made once the event is authorised.
        data = {**body, "personal": _PLACEHOLDER_SEALED}
    sub = Submission(family=family, source="", time=datetime.now(UTC), data=data)
    try:
        event = to_event(sub, None)
    except ValidationError as exc:
        errors += from_validation_error(exc, prefix=prefix)
    if errors:
        return errors
    return _Checked(event, personal)


class AdapterService:
    def __init__(self, adapter: Adapter, settings: Settings, pool: asyncpg.Pool, keystore: KeyStore) -> None:
        self.adapter = adapter
        self.settings = settings
        self.pool = pool
        self.keystore = keystore
        self.committer = _GroupCommitter(self)

    # --- rejections (value-free) -----------------------------------------------------------------

    async def record_rejections(self, family: str, rules: Sequence[tuple[str, str]]) -> None:
        """``rules`` are (operator_rule, rule_class) pairs: no values, ever."""
        if not rules:
            return
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
        """Validate all, authorise all, then enqueue all or none. Raises Rejected, AuthError, IdempotencyConflict."""
        checked: list[_Checked] = []
        errors: list[FieldError] = []
        for i, body in enumerate(bodies):
            result = _validate(family, body, (i,) if batch else ())
            if isinstance(result, list):
                errors.extend(result)
            else:
                checked.append(result)
        if errors:
            raise await self.reject(family, errors)
        async with self.pool.acquire() as conn:
            offices = await self._site_offices(conn, family, [c.event.data for c in checked])
            sources = []
            for c in checked:
                try:
                    sources.append(authorize(self.adapter, principal, family, _plain(c.event.data), offices))
                except AuthError as exc:
                    raise await self.forbid(family.value, exc) from None
            digest = request_digest(family, list(bodies) if batch else bodies[0]) if idempotency_key else b""
            if idempotency_key:
                earlier = await self._replay(conn, principal, family, idempotency_key, digest)
                if earlier is not None:
                    return earlier
        idem = (principal.organisation, idempotency_key, digest, family.value) if idempotency_key else None
        event_ids = await self.committer.commit(_Unit(checked, sources, idem))
        if event_ids is None:
            # A concurrent request with the same key committed first: answer as it did.
            async with self.pool.acquire() as conn:
                earlier = await self._replay(conn, principal, family, idempotency_key or "", digest)
            assert earlier is not None
            return earlier
        REQUESTS.labels(self.adapter.value, family.value, "accepted").inc()
        return Accepted(event_ids)

    async def _replay(
        self, conn: asyncpg.Connection, principal: Principal, family: Family, key: str, digest: bytes
    ) -> Accepted | None:
        row = await conn.fetchrow(
            "SELECT request_hash, family, event_ids FROM idempotency_keys WHERE organisation = $1 AND key = $2",
            principal.organisation,
            key,
        )
        if row is None:
            return None
        if bytes(row["request_hash"]) != digest or row["family"] != family.value:
            REQUESTS.labels(self.adapter.value, family.value, "conflict").inc()
            await self.record_rejections(family.value, [("Idempotency-Key: reused", "idempotency conflict")])
            raise IdempotencyConflict(key, row["family"])
        REQUESTS.labels(self.adapter.value, family.value, "replayed").inc()
        return Accepted(list(row["event_ids"]), replayed=True)

    async def _site_offices(
        self, conn: asyncpg.Connection, family: Family, data: Iterable[BaseModel]
    ) -> dict[str, str]:
        if self.adapter is not Adapter.EMPLOYMENT:
            return {}
        sites = {s for d in data if (s := sites_to_resolve(family, _plain(d))) is not None}
        if not sites:
            return {}
        rows = await conn.fetch(
            "SELECT site_id, office FROM sites WHERE site_id = ANY($1::text[])", list(sites)
        )
        return {r["site_id"]: r["office"] for r in rows}

    async def _seal(
        self, conn: asyncpg.Connection, checked: Sequence[_Checked], sources: Sequence[str]
    ) -> list[Event]:
        """Swap the throwaway seal for the person's real data key, and set the derived source."""
        people = [c.event.subject for c in checked if c.personal is not None]
        keys = await self.keystore.keys_for(conn, people) if people else {}
        events = []
        for c, source in zip(checked, sources, strict=True):
            data = c.event.data
            if c.personal is not None:
                sealed = seal(keys[c.event.subject], c.event.subject, c.personal)
                data = data.model_copy(update={"personal": sealed})
            events.append(dataclasses.replace(c.event, data=data, source=source))
        return events

    # --- batch files --------------------------------------------------------------------------------

    async def import_csv(
        self,
        principal: Principal,
        family: Family,
        content: bytes,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportSummary:
        """Accept a file's valid rows (each row once, ever), report the others. Raises FileError for the file."""
        summary = ImportSummary()
        encoding, header, rows = read_rows(family.value, content)
        summary.encoding = encoding
        total = max(content.count(b"\n") - 1, 1)
        try:
            for chunk in _batched(rows, CHUNK_ROWS):
                await self._import_chunk(principal, family, header.label_for, chunk, summary)
                if progress:
                    progress(summary.rows, max(total, summary.rows))
        except FileError as exc:
            summary.file_error = str(exc)
        CSV_ROWS.labels(self.adapter.value, family.value, "accepted").inc(summary.accepted)
        CSV_ROWS.labels(self.adapter.value, family.value, "duplicate").inc(summary.duplicates)
        CSV_ROWS.labels(self.adapter.value, family.value, "rejected").inc(summary.rejected)
        return summary

    async def _import_chunk(
        self,
        principal: Principal,
        family: Family,
        label_for: Callable[[tuple[int | str, ...]], str | None],
        chunk: Sequence[ParsedRow],
        summary: ImportSummary,
    ) -> None:
        summary.rows += len(chunk)
        valid: list[tuple[ParsedRow, _Checked]] = []
        bad: list[tuple[int, FieldError]] = []
        for row in chunk:
            if row.errors:
                bad.extend((row.line, e) for e in row.errors)
                continue
            result = _validate(family, row.data)
            if isinstance(result, list):
                bad.extend(
                    (row.line, dataclasses.replace(e, label=_label(label_for, e.field))) for e in result
                )
            else:
                valid.append((row, result))
        accepted_rows: list[tuple[ParsedRow, _Checked, str]] = []
        async with self.pool.acquire() as conn:
            offices = await self._site_offices(conn, family, [c.event.data for _, c in valid])
            for row, c in valid:
                try:
                    source = authorize(self.adapter, principal, family, _plain(c.event.data), offices)
                except AuthError as exc:
                    bad.append((row.line, FieldError("(row)", exc.reason, None, "forbidden")))
                    continue
                accepted_rows.append((row, c, source))
            if accepted_rows:
                events = await self._seal(
                    conn, [c for _, c, _ in accepted_rows], [s for _, _, s in accepted_rows]
                )
                keys = [_row_key(family, row) for row, _, _ in accepted_rows]
                async with conn.transaction():
                    fresh = await conn.fetch(
                        "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids) "
                        "SELECT $1, k, decode(k, 'hex'), $2, ARRAY[e] FROM unnest($3::text[], $4::text[]) AS t(k, e) "
                        "ON CONFLICT DO NOTHING RETURNING key",
                        principal.organisation,
                        family.value,
                        keys,
                        [e.id for e in events],
                    )
                    new_keys = {r["key"] for r in fresh}
                    todo = []
                    for key, event in zip(keys, events, strict=True):
                        if key in new_keys:
                            new_keys.discard(key)  # a repeated row in the same chunk is a duplicate
                            todo.append(event)
                    await enqueue(
                        conn,
                        todo,
                        origin=f"{self.adapter.value}-csv",
                        namespace=self.settings.topic_namespace,
                    )
                summary.accepted += len(todo)
                summary.duplicates += len(events) - len(todo)
        bad.sort(key=lambda item: item[0])
        summary.rejected += len({line for line, _ in bad})
        summary.errors.extend(bad)
        await self.record_rejections(family.value, [(e.operator_rule, e.rule_class) for _, e in bad])


def _batched(rows: Iterable[ParsedRow], n: int) -> Iterable[list[ParsedRow]]:
    it = iter(rows)
    while chunk := list(islice(it, n)):
        yield chunk


@dataclass(slots=True)
class _Unit:
    """One request's events, waiting for the next group commit."""

    checked: list[_Checked]
    sources: list[str]
    idem: tuple[str, str, bytes, str] | None  # organisation, key, request digest, family
    done: asyncio.Future[list[str] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _GroupCommitter:
    """Commits concurrent requests together: one transaction (and one fsync) for everything that arrived
    while the previous commit ran. Each request still gets its own answer, and only after its commit;
    a unit whose idempotency key was taken by a concurrent request is answered ``None`` (replay it)."""

    MAX_EVENTS = 2000

    def __init__(self, service: AdapterService) -> None:
        self.service = service
        self.pending: list[_Unit] = []
        self.task: asyncio.Task[None] | None = None

    async def commit(self, unit: _Unit) -> list[str] | None:
        self.pending.append(unit)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await unit.done

    async def _drain(self) -> None:
        while self.pending:
            group: list[_Unit] = []
            size = 0
            while self.pending and (not group or size + len(self.pending[0].checked) <= self.MAX_EVENTS):
                unit = self.pending.pop(0)
                group.append(unit)
                size += len(unit.checked)
            try:
                results = await self._flush(group)
            except Exception as exc:  # every waiting request learns of the failure; none is left hanging
                for unit in group:
                    if not unit.done.done():
                        unit.done.set_exception(exc)
                continue
            for unit, result in zip(group, results, strict=True):
                if not unit.done.done():
                    unit.done.set_result(result)

    async def _flush(self, group: list[_Unit]) -> list[list[str] | None]:
        service = self.service
        async with service.pool.acquire() as conn:
            checked = [c for u in group for c in u.checked]
            sources = [s for u in group for s in u.sources]
            events = await service._seal(conn, checked, sources)
            per_unit: list[list[Event]] = []
            i = 0
            for unit in group:
                per_unit.append(events[i : i + len(unit.checked)])
                i += len(unit.checked)
            keyed = [(u, evs) for u, evs in zip(group, per_unit, strict=True) if u.idem is not None]
            async with conn.transaction():
                won: set[tuple[str, str]] = set()
                if keyed:
                    rows = await conn.fetch(
                        "INSERT INTO idempotency_keys (organisation, key, request_hash, family, event_ids) "
                        "SELECT o, k, h, f, string_to_array(e, ',') "
                        "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[]) AS t(o, k, h, f, e) "
                        "ON CONFLICT DO NOTHING RETURNING organisation, key",
                        [u.idem[0] for u, _ in keyed if u.idem],
                        [u.idem[1] for u, _ in keyed if u.idem],
                        [u.idem[2] for u, _ in keyed if u.idem],
                        [u.idem[3] for u, _ in keyed if u.idem],
                        [",".join(e.id for e in evs) for _, evs in keyed],  # hex ids: no commas inside
                    )
                    won = {(r["organisation"], r["key"]) for r in rows}
                results: list[list[str] | None] = []
                todo: list[Event] = []
                for unit, evs in zip(group, per_unit, strict=True):
                    if unit.idem is not None and (unit.idem[0], unit.idem[1]) not in won:
                        results.append(None)
                        continue
                    if unit.idem is not None:
                        won.discard(
                            (unit.idem[0], unit.idem[1])
                        )  # a second unit with the key in this group raced
                    results.append([e.id for e in evs])
                    todo.extend(evs)
                await enqueue(
                    conn,
                    todo,
                    origin=f"{service.adapter.value}-adapter",
                    namespace=service.settings.topic_namespace,
                )
        return results


def _plain(data: BaseModel) -> Mapping[str, Any]:
    """The few fields authorisation reads (a full dump per event would cost more than the check)."""
    fields = type(data).model_fields
    view: dict[str, Any] = {k: getattr(data, k) for k in ("authority", "site", "office") if k in fields}
    if "captured" in fields:
        captured = data.captured  # type: ignore[attr-defined]
        view["captured"] = {"side": captured.side.value, "site": captured.site}
    return view


def _label(label_for: Callable[[tuple[int | str, ...]], str | None], dotted_field: str) -> str | None:
    loc = tuple(
        p for p in dotted_field.replace("[", ".").replace("]", "").split(".") if p and not p.isdigit()
    )
    return label_for(loc)


def _row_key(family: Family, row: ParsedRow) -> str:
    """Same content, same key: importing a file again (in any encoding) creates nothing new."""
    return request_digest(family, row.data).hex()
