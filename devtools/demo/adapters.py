"""The demo through the adapters: the simulator's submissions posted as real client systems would.

Both adapters run in-process on their configured ports; every authority and Hello Work office in the
stream gets its own credential; referrals go as one batch file per authority (the first in CP932 with
Japanese headers and era dates, as many municipal systems write them), everything else over HTTP in
batches, per client system, in the stream's order.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg
from rich.console import Console

from consumers.agreements import add_agreement
from contracts.envelope import Family
from domain.consent import Scope
from infra.auth import OrgKind, Role, add_client
from infra.codecs.csv_write import write_csv
from infra.config import Settings
from producers.adapters.app import employment_app, welfare_app
from producers.adapters.client import AdapterClient
from producers.adapters.csv_import import publish_accepted
from producers.adapters.serve import running
from producers.adapters.sites import add_sites
from producers.submission import Submission

BATCH = 200


def sites_of_stream(subs: Sequence[Submission]) -> dict[str, str]:
    """Site -> office, as the stream's registrations and placements (or office-sent events) show it."""
    sites: dict[str, str] = {}
    for s in subs:
        if s.family in (Family.REGISTRATION, Family.PLACEMENT):
            sites.setdefault(s.data["site"], s.data["office"])
    for s in subs:
        if s.source.startswith("/hellowork/offices/"):
            site = s.data["captured"]["site"] if s.family is Family.CONSENT else s.data.get("site")
            if site:
                sites.setdefault(site, s.source.rsplit("/", 1)[1])
    return sites


async def add_demo_agreements(conn: asyncpg.Connection, sites: dict[str, str]) -> int:
    """Agreements for every purpose covering each authority's sites' offices, as each joint site runs
    under one (``hub agreements add``). Without one consent alone discloses nothing. An office already
    under a demo agreement is not added again; one that is not yet (a later stream's) gets its own."""
    offices: dict[str, set[str]] = defaultdict(set)
    for site, office in sites.items():
        offices[site[:6]].add(office)
    covered = {
        (r["authority"], r["office"])
        for r in await conn.fetch(
            "SELECT DISTINCT authority, unnest(offices) AS office FROM sharing_agreements "
            "WHERE created_by = 'demo' AND ended_at IS NULL AND valid_until IS NULL"
        )
    }
    for authority, its_offices in sorted(offices.items()):
        missing = sorted(o for o in its_offices if (authority, o) not in covered)
        if not missing:
            continue
        await add_agreement(
            conn,
            authority=authority,
            offices=missing,
            sites=[],
            purposes=[s.value for s in Scope],
            valid_from=date(2015, 4, 1),
            valid_until=None,
            title=f"個人情報保護協定 (demo) {authority}",
            created_by="demo",
        )
    return len(offices)


async def demo_through_adapters(
    settings: Settings, pool: asyncpg.Pool, subs: list[Submission], out: Console
) -> dict[str, int]:
    """Post ``subs`` through both adapters (HTTP and CSV); returns counts. Events are in Kafka on return."""
    counts: dict[str, int] = defaultdict(int)
    async with pool.acquire() as conn:
        sites = sites_of_stream(subs)
        n_sites = await add_sites(conn, [(site, office, "") for site, office in sorted(sites.items())])
        n_agreements = await add_demo_agreements(conn, sites)
        tokens: dict[str, str] = {}
        for source in sorted({s.source for s in subs}):
            kind = OrgKind.AUTHORITY if source.startswith("/authorities/") else OrgKind.OFFICE
            _, tokens[source] = await add_client(
                conn,
                name=f"demo {kind.value} {source.rsplit('/', 1)[1]}",
                org_kind=kind,
                org_code=source.rsplit("/", 1)[1],
                roles=frozenset({Role.PUBLISH}),
            )
    out.print(
        f"   adapters: {n_sites} sites registered, {len(tokens)} client systems with their own credentials, "
        f"{n_agreements} data-sharing agreements (個人情報保護協定) in force"
    )
    host = settings.http_host
    async with (
        running(welfare_app(settings, relay=False), host, settings.welfare_port) as welfare,
        running(employment_app(settings), host, settings.employment_port) as employment,
    ):
        out.print(f"   welfare adapter {welfare}, employment adapter {employment} (OpenAPI at /docs)")

        def client(source: str) -> AdapterClient:
            base = welfare if source.startswith("/authorities/") else employment
            return AdapterClient(base, tokens[source])

        # Referrals first, as files: a case worker's system never sends one after the registration it led to.
        referrals: dict[str, list[Submission]] = defaultdict(list)
        for s in subs:
            if s.family is Family.REFERRAL:
                referrals[s.source].append(s)
        for i, (source, items) in enumerate(sorted(referrals.items())):
            cp932 = i == 0
            content = write_csv(
                "referral",
                [s.data for s in items],
                japanese=cp932,
                era=cp932,
                encoding="cp932" if cp932 else "utf-8",
            )
            http = client(source)
            try:
                response = await http.upload_csv(
                    "referral", content, f"referrals-{source.rsplit('/', 1)[1]}.csv"
                )
            finally:
                await http.aclose()
            body = response.json()
            counts["csv_files"] += 1
            counts["csv_rows_accepted"] += body.get("accepted", 0)
            counts["csv_rows_rejected"] += body.get("rejected", 0)
            counts["csv_rows_duplicate"] += body.get("duplicates", 0)
            out.print(
                f"   CSV {source}: {body.get('rows', 0)} referral rows ({body.get('encoding')}), "
                f"{body.get('accepted', 0)} accepted, {body.get('duplicates', 0)} already imported, "
                f"{body.get('rejected', 0)} rejected"
            )

        # Per client system and family, in the stream's order: a person's events on one topic keep their
        # order; across topics consumers never relied on it. Registrations go before the rest: only an
        # organisation that holds a person (P3: taken in by a registration or referral at its joint site)
        # may publish consent or retention about them. What is refused because its registration had not
        # arrived yet (the simulator keys a few registrations in late, as from paper) is sent again at the
        # end, as a client system resends after a 403 — with the same Idempotency-Key.
        streams: dict[tuple[str, Family], list[Submission]] = defaultdict(list)
        for s in subs:
            if s.family is not Family.REFERRAL:
                streams[(s.source, s.family)].append(s)
        refused: list[tuple[str, list[Submission]]] = []
        for phase in (
            {k: v for k, v in streams.items() if k[1] is Family.REGISTRATION},
            {k: v for k, v in streams.items() if k[1] is not Family.REGISTRATION},
        ):
            results = await asyncio.gather(
                *(_post_stream(client(src), items, refused, src) for (src, _), items in phase.items())
            )
            for result in results:
                for key, value in result.items():
                    counts[key] += value
        if refused:
            resend: dict[str, list[Submission]] = defaultdict(list)
            for src, chunk in refused:
                resend[src].extend(chunk)
            counts["http_events_rejected"] -= sum(len(c) for _, c in refused)
            results = await asyncio.gather(
                *(_post_stream(client(src), items, None, src) for src, items in resend.items())
            )
            for result in results:
                for key, value in result.items():
                    counts[key] += value

        # One deliberately broken event, to show what a client system gets back.
        example = next(iter(sorted(referrals)), None)
        if example is not None:
            bad = dict(referrals[example][0].data) | {"authority": "112039", "site": "112039-01"}
            http = client(example)
            try:
                response = await http.publish("referral", bad)
            finally:
                await http.aclose()
            out.print(
                f"   a broken referral gets {response.status_code}: {response.json()['errors'][0]['message']}"
            )
            counts["http_rejected_examples"] += 1
        await publish_accepted(settings, pool)
    out.print(
        f"   accepted: {counts['http_events_accepted']} events over HTTP in {counts['http_requests']} requests, "
        f"{counts['csv_rows_accepted']} referral rows from {counts['csv_files']} CSV files; "
        f"already there (replayed/duplicate): {counts['http_events_replayed'] + counts['csv_rows_duplicate']}; "
        f"rejected: {counts['http_events_rejected'] + counts['csv_rows_rejected']}"
    )
    return dict(counts)


async def _post_stream(
    http: AdapterClient,
    items: Sequence[Submission],
    refused: list[tuple[str, list[Submission]]] | None,
    source: str,
) -> dict[str, int]:
    """Post ``items`` in batches of one family; a batch refused with 403 goes to ``refused`` (to resend)."""
    counts: dict[str, int] = defaultdict(int)
    try:
        i = 0
        while i < len(items):
            family = items[i].family
            chunk = [items[i]]
            while (
                i + len(chunk) < len(items) and len(chunk) < BATCH and items[i + len(chunk)].family is family
            ):
                chunk.append(items[i + len(chunk)])
            i += len(chunk)
            # The simulator's event ids make a stable key: re-running a failed post never duplicates.
            key = hashlib.sha256("".join(s.event_id for s in chunk).encode()).hexdigest()
            body: list[dict[str, Any]] = [s.data for s in chunk]
            response = await http.publish_batch(family.value, body, key=key)
            counts["http_requests"] += 1
            if response.status_code == 202 and response.json()["replayed"]:
                counts["http_events_replayed"] += len(chunk)  # the demo ran before with these events
            elif response.status_code == 202:
                counts["http_events_accepted"] += len(chunk)
            else:
                counts["http_events_rejected"] += len(chunk)
                if refused is not None and response.status_code == 403:
                    refused.append((source, chunk))
    finally:
        await http.aclose()
    return counts
