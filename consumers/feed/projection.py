"""The feed consumer's own projection of the five families (thin edge: decode → rows).

Idempotent by event id (``feed_seen_events``) on top of the runtime's exactly-once positions, because the
outbox may re-send an event under the same id. Personal blocks are stored sealed, as they arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from consumers.provenance import check_sources
from consumers.runtime import Consumed
from contracts.envelope import Family
from contracts.events import ConsentAction
from infra.config import Settings


class FeedProjection:
    name = "placement-feed"

    def __init__(self, settings: Settings) -> None:
        self.topics: Sequence[str] = settings.event_topics

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Consumed]) -> None:
        check_sources(batch)  # P2/P4 again: a record is not trusted because it is on the topic
        fresh = set(
            await conn.fetchval(
                "WITH ins AS (INSERT INTO feed_seen_events SELECT unnest($1::text[]) "
                "ON CONFLICT DO NOTHING RETURNING event_id) SELECT coalesce(array_agg(event_id), '{}') FROM ins",
                list({c.event.id for c in batch}),
            )
        )
        regs: list[Any] = []
        refs: list[Any] = []
        places: list[Any] = []
        rets: list[Any] = []
        consents: list[Any] = []
        for c in batch:
            e = c.event
            if e.id not in fresh:
                continue
            fresh.discard(e.id)  # the same id twice in one batch applies once
            d = e.data
            if e.family is Family.REGISTRATION:
                regs.append((e.id, d.person_key, d.authority, d.site, d.registered_on, d.team_support,
                             msgspec.structs.asdict(d.personal), e.time, [a.value for a in d.attributes],
                             d.sex.value, d.age_band.value, bool(d.foreign_national),
                             d.prior_application_office))  # fmt: skip
            elif e.family is Family.REFERRAL:
                refs.append((d.referral_id, d.person_key, d.authority, d.site, d.referred_on, e.time,
                             d.team_support_from))  # fmt: skip
            elif e.family is Family.PLACEMENT:
                places.append((d.placement_id, d.person_key, d.site, d.site[:6], d.placed_on, d.route.value,
                               d.occupation.group, d.occupation.classification_version,
                               d.employment_type.value, d.sex.value, d.age_band.value,
                               [a.value for a in d.attributes], msgspec.structs.asdict(d.personal), e.time,
                               bool(d.foreign_national)))  # fmt: skip
            elif e.family is Family.RETENTION:
                rets.append((d.placement_id, d.checkpoint_months, d.person_key, d.status.value, d.checked_on,
                             e.time))  # fmt: skip
            elif e.family is Family.CONSENT:
                consents.append((d.consent_id, d.person_key, d.version, d.action is ConsentAction.WITHDRAWN,
                                 [s.value for s in d.scopes],
                                 [{"kind": r.kind.value, "code": r.code} for r in d.recipients],
                                 d.valid_from, d.valid_until, d.captured.signed_at))  # fmt: skip
        if regs:
            await conn.executemany(
                "INSERT INTO feed_registrations (event_id, person_key, authority, site, registered_on, "
                "team_support, personal, arrived_at, attributes, sex, age_band, foreign_national, "
                "prior_application_office) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT DO NOTHING",
                regs,
            )
        if refs:
            await conn.executemany(
                "INSERT INTO feed_referrals (referral_id, person_key, authority, site, referred_on, arrived_at, "
                "team_support_from) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING",
                refs,
            )
        if places:
            # First report wins: placement corrections are not part of the contract yet.
            await conn.executemany(
                "INSERT INTO feed_placements (placement_id, person_key, site, site_authority, placed_on, route, "
                "occupation, classification_version, employment_type, sex, age_band, attributes, personal, "
                "arrived_at, foreign_national) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
                "ON CONFLICT DO NOTHING",
                places,
            )
        if rets:
            await conn.executemany(
                "INSERT INTO feed_retention (placement_id, checkpoint_months, person_key, status, checked_on, "
                "arrived_at) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (placement_id, checkpoint_months) DO UPDATE "
                "SET status = EXCLUDED.status, checked_on = EXCLUDED.checked_on, arrived_at = EXCLUDED.arrived_at "
                "WHERE EXCLUDED.arrived_at > feed_retention.arrived_at",
                rets,
            )
        await _mark_dirty(conn, regs, refs, places, rets)
        if consents:
            # domain.consent rule 1: a higher version replaces; a late lower or equal one is ignored.
            await conn.executemany(
                "INSERT INTO feed_consents (consent_id, person_key, version, withdrawn, scopes, recipients, "
                "valid_from, valid_until, signed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
                "ON CONFLICT (person_key, consent_id) DO UPDATE SET version = EXCLUDED.version, "
                "withdrawn = EXCLUDED.withdrawn, scopes = EXCLUDED.scopes, recipients = EXCLUDED.recipients, "
                "valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until, "
                "signed_at = EXCLUDED.signed_at WHERE EXCLUDED.version > feed_consents.version",
                consents,
            )


# Which feeds an applied event may change: placements their month and the retention cohorts that
# include them (1, 3, 6 months on), for the site's authority and every authority that referred the
# person; registrations their month; a referral every feed holding the person and, with team support,
# the month of the enrolment; retention its cohort.
_OWNERS = (
    "CROSS JOIN LATERAL (SELECT p.site_authority AS authority UNION "
    "SELECT f.authority FROM feed_referrals f WHERE f.person_key = p.person_key) o"
)
_SHIFTED = "to_char(p.placed_on + make_interval(months => k), 'YYYY-MM')"


async def _mark_dirty(
    conn: asyncpg.Connection, regs: list[Any], refs: list[Any], places: list[Any], rets: list[Any]
) -> None:
    if places:
        await conn.execute(
            f"INSERT INTO feed_dirty (authority, month) SELECT o.authority, {_SHIFTED} FROM feed_placements p "
            f"CROSS JOIN unnest(ARRAY[0, 1, 3, 6]) AS k {_OWNERS} WHERE p.placement_id = ANY($1::text[])",
            [r[0] for r in places],
        )
    if regs:
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT authority, to_char(registered_on, 'YYYY-MM') "
            "FROM feed_registrations WHERE event_id = ANY($1::text[])",
            [r[0] for r in regs],
        )
    if refs:
        await conn.execute(
            f"INSERT INTO feed_dirty (authority, month) SELECT r.authority, {_SHIFTED} FROM feed_referrals r "
            "JOIN feed_placements p USING (person_key) CROSS JOIN unnest(ARRAY[0, 1, 3, 6]) AS k "
            "WHERE r.referral_id = ANY($1::text[]) UNION ALL "
            "SELECT r.authority, to_char(g.registered_on, 'YYYY-MM') FROM feed_referrals r "
            "JOIN feed_registrations g ON g.person_key = r.person_key AND g.authority = r.authority "
            "WHERE r.referral_id = ANY($1::text[]) UNION ALL "
            "SELECT authority, to_char(team_support_from, 'YYYY-MM') FROM feed_referrals "
            "WHERE referral_id = ANY($1::text[]) AND team_support_from IS NOT NULL",
            [r[0] for r in refs],
        )
    if rets:
        await conn.execute(
            "INSERT INTO feed_dirty (authority, month) SELECT o.authority, "
            "to_char(p.placed_on + make_interval(months => t.k), 'YYYY-MM') "
            "FROM unnest($1::text[], $2::int[]) AS t(placement_id, k) JOIN feed_placements p USING (placement_id) "
            f"{_OWNERS}",
            [r[0] for r in rets],
            [r[1] for r in rets],
        )
