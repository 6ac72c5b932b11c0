"""``ittai.erasure.v1`` as the consumers take it: the hub erased a person, drop what you keep about them.

Every consumer subscribes to the erasure topic with the others (``Settings.event_topics``). Its handler
first takes the erasures out of the batch (``erasures_in``), re-checking each one's ``ce_source``: only
the hub's operator side publishes erasures (P9), so one from anywhere else — a client's credential, a
rogue producer with write access — is refused and dead-lettered alone, the reason naming the rule. A
header proves nothing, so each erasure must also carry the operator's Ed25519 signature over what it says
(``infra.signing``): one written with a leaked Kafka password under the right ``ce_source`` is refused too. The
rest of the batch goes its usual way, and then the consumer drops the erased people from its own state
in the same transaction (``shared_view.erasure.drop_erased``, ``feed.store.drop_erased``; the event log
keeps its verbatim records, whose personal blocks no key opens any more), and every key store of the
process forgets their keys. Erasures are applied after the batch's other events: one person's events
travel in order on one partition key, so an event of the person earlier in the batch is dropped with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from consumers.provenance import check_sources
from consumers.runtime import Consumed, HandlerRejected
from contracts.envelope import Family
from infra.signing import ErasureVerifier

# Bound once: on Python 3.11 an enum class's attribute costs a Python ``__getattr__`` hook on its metaclass
# (~1k instructions), here once per event of every batch of the shared view and the feed.
_ERASURE = Family.ERASURE


def erasures_in(batch: Sequence[Consumed], verifier: ErasureVerifier) -> tuple[list[Consumed], list[str]]:
    """The batch without its erasures, and the people they erase (each once, in order). Raises
    ``HandlerRejected`` for an erasure that does not come from the hub's operator side, or that does not
    carry a listed operator key's signature over exactly what it says, for this deployment
    (``infra.signing``)."""
    rest: list[Consumed] = []
    erased: dict[str, None] = {}
    for consumed in batch:
        event = consumed.event
        if event.family is not _ERASURE:
            rest.append(consumed)
            continue
        check_sources((consumed,))  # P9: the operator side's ``ce_source`` (the consumers' one re-check)
        unsigned = verifier.refusal(event)
        if unsigned is not None:
            raise HandlerRejected(unsigned)
        erased[event.subject] = None
    return rest, list(erased)


async def on_register(conn: asyncpg.Connection, persons: Sequence[str]) -> list[str]:
    """Which of ``persons`` are on the erasure register (``sv_erasures``, written in the erasure's own
    transaction). It, not the erasure event, is what keeps an erased person out for good: a consumer that
    re-reads the topics finds the events of people whose erasure no longer verifies (signed by a retired
    key, or in an older form) and drops them by the register."""
    rows = await conn.fetch(
        "SELECT person_key FROM sv_erasures WHERE person_key = ANY($1::text[])", list(persons)
    )
    return [r["person_key"] for r in rows]
