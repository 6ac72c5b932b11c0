"""A batch of events as every consumer's planning function sees it: plain data, no envelope or driver types.

Each consumer has the same shape (``docs/ARCHITECTURE.md``): its handler loads what the batch needs from
its store, calls a pure planning function here in the domain (batch + current state → rows to write), and
writes the plan through the store. Two rules hold for every consumer:

* **An event applies once.** A repeat within a batch is dropped by the key the consumer keeps it by, as
  one across batches is: the shared view keeps events by id (``once_each``); the feed each fact by its own
  key (``domain.feed_projection``: a registration by its event id, a placement by its id and person, …). A
  repeat across batches (the outbox re-sends an event under the same id after a crash) is recognised from
  the state the handler loaded, and the store's ``INSERT … ON CONFLICT`` on the same key stands behind that.
* **Newest consent version wins** (``domain.consent`` rule 1), applied by ``newest_versions`` to the
  batch's consents against the versions kept. A consent is a versioned record, kept by (person, consent
  id), never by event id — across batches as within one: ``once_each`` passes every consent on, so an id
  that another record of the batch (only a forger repeats one) carries too hides no consent (a withdrawal
  above all) and takes no event's place, and a batch plans as its parts planned one after the other do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.consent import PersonConsent, consent_record

CONSENT = "consent"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One event of a batch: the envelope attributes a consumer needs, and the event data in the
    contract's JSON form (dates as ISO text, the personal block still sealed)."""

    event_id: str
    family: str
    person_key: str
    time: datetime
    data: Mapping[str, Any]


def once_each(batch: Iterable[Incoming]) -> list[Incoming]:
    """The batch with every non-consent event id once (its first delivery) and every consent, in order
    (consents are applied once by their record and version: ``newest_versions``)."""
    seen: set[str] = set()
    out = []
    for e in batch:
        if e.family == CONSENT:
            out.append(e)
        elif e.event_id not in seen:
            seen.add(e.event_id)
            out.append(e)
    return out


def consent_of(event: Incoming) -> PersonConsent:
    return PersonConsent(event.person_key, event.event_id, consent_record(event.data))
