"""What a consumer counts of a batch is counted once its transaction commits, not each time it ran.

The runtime runs a handler's ``handle`` again for the same records after a transient failure (the
database restarting under the batch), in the halves of an isolation, and a stale batch's transaction is
rolled back after ``handle`` ran. The shared view's count of an erased person's events it skipped (what
``hub replay shared-view`` reports) was kept in ``handle``, so such a batch counted twice; it showed as a
flaky ``masked_events == 2`` for 1 after a "stale batch discarded" under load.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from consumers.runtime import ConsumerRuntime
from consumers.shared_view.handler import SharedViewHandler
from infra.config import Settings
from infra.signing import erasure_signer
from producers.submission import to_event
from tests import factories
from tests.helpers import catch_up_view_and_feed
from tests.integration.test_erasure_signatures import _replay
from tests.integration.test_hostile_consumers import _accept, _publish_raw, _raw


async def test_a_batch_retried_after_a_transient_failure_counts_its_masked_events_once(
    pool: asyncpg.Pool, isolated_per_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_per_test
    gone, kept = factories.person_key(), factories.person_key()
    await _accept(
        pool,
        settings,
        [s for pk in (gone, kept) for s in (factories.registration(pk), factories.consent(pk))],
    )
    erasure = _raw(settings, to_event(factories.erasure(gone, signer=erasure_signer(settings)), None))
    await _publish_raw(settings, [erasure])
    await catch_up_view_and_feed(pool, settings)

    plain = await _replay(pool, settings)
    assert plain >= 2, "the erased person's registration and consent are skipped by a replay"

    # The first commit that ran ``handle`` fails as if the database went away after the handler's work
    # (at saving the positions, inside the transaction): the runtime rolls back and runs it again.
    save = ConsumerRuntime._save_positions
    failures = [ConnectionRefusedError("database unreachable (simulated)")]

    async def flaky_save(self: ConsumerRuntime, conn: asyncpg.Connection, spans: Any) -> None:
        if failures and isinstance(self.handler, SharedViewHandler):
            raise failures.pop()
        await save(self, conn, spans)

    monkeypatch.setattr(ConsumerRuntime, "_save_positions", flaky_save)
    retried = await _replay(pool, settings)
    assert not failures, "the simulated failure happened"
    assert retried == plain, f"{retried} masked events counted for {plain}: a rolled-back run counted"
