"""Acceptance: the one path every producer takes — validate → authorise → seal → enqueue.

HTTP and CSV (``producers.adapters``) and the simulator (``producers.publish``) accept events through the
same steps:

1. **validate**: once, against the family's contract with the personal block in clear; a refusal names
   the field and the rule. The adapters judge a request body or a file's row by the contract's msgspec
   structs (``adapters.csv_chunks.FamilyRows``; what they refuse, the contract itself judges and
   explains, ``submission.check``); trusted callers validate with the contract (``submission.validate``).
2. **authorise** (``adapters.authorization.authorize`` over ``holders.registers_of``): the rules P1–P9 of
   ``domain.provenance`` over the registers they need — the site registry (P2), the holders of the people
   concerned (P3), their withdrawal fences (P7), the erasure register (P9) — loaded once per request or
   file chunk: a credential proves one organisation, which publishes only at its own sites and only about
   people it holds, nothing signed behind a withdrawal, and nothing more about an erased person. The
   simulator and tests are trusted sources and skip this step (on a local development stack only,
   ``producers.publish``). The erasure register is read again at commit (``outbox.accept_sealed``).
3. **seal** (``KeyStore.sealing_keys``; the adapters' ``csv_chunks.seal_rows``): each personal block with
   its person's data key — the stored one, or a fresh one the accepting transaction stores — only for
   events that are valid and authorised: a refused request leaves no key behind.
4. **enqueue** (``outbox.accept_sealed``: data keys, erasure fence, idempotency keys, outbox rows and
   registers in one round trip; a file chunk's ``accept_file_rows``, migration 029): into the outbox, with what acceptance
   changes in the registers (``producers.holders``: a registration or referral makes its site's parties
   hold the person, P3; a withdrawal moves the person's fence, P7). Once it commits, the event reaches
   Kafka even if the broker is down right now, and every later authorisation and disclosure sees the
   registers as of this acceptance.

``accept`` runs the four steps for trusted callers. The adapters run them with their idempotency keys in
the same transaction, and batch concurrent requests into one transaction with a group committer (an
optional batcher: it changes how many requests share a commit, never the steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from contracts.envelope import Event
from infra.crypto import KeyStore, stored_keys
from producers.holders import ErasedMeanwhile
from producers.outbox import accept_sealed
from producers.submission import ExtraPolicy, Submission, build_event, seal_checked, validate

__all__ = ["accept"]


async def accept(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    subs: Sequence[Submission],
    *,
    origin: str,
    namespace: str,
    extra: ExtraPolicy = "forbid",
) -> list[Event]:
    """Validate, seal and enqueue ``subs`` atomically (all or none), each under its own trusted source.
    Raises ``pydantic.ValidationError`` for the first invalid submission, before any key is made, and
    ``ErasedMeanwhile`` (accepting nothing, storing no key) where one is about a person on the erasure
    register (P9). The accepting transaction is ``outbox.accept_sealed``'s, as for the adapters' requests."""
    checked = [
        validate(s.family, s.data, extra=extra, time=s.time, event_id=s.event_id, trusted=True) for s in subs
    ]
    people = sorted({c.subject for c in checked if c.personal is not None})
    for _ in range(_TRIES):
        stored = await conn.fetchval(f"SELECT {stored_keys(1)}", people) if people else []
        sealing = keystore.sealing_keys(stored, people)
        events = [
            build_event(c, s.source, seal_checked(c, sealing.keys.get(c.subject)))
            for c, s in zip(checked, subs, strict=True)
        ]
        verdicts = await accept_sealed(conn, [events], sealing.fresh, origin=origin, namespace=namespace)
        if verdicts.erased:
            raise ErasedMeanwhile()
        if not verdicts.conflicted:  # else a key was stored meanwhile for one of them: seal again under it
            keystore.remember(sealing, sealing.keys)
            return events
    raise RuntimeError("a data key changed under every try of this acceptance")


_TRIES = 5
