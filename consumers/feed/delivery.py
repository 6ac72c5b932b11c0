"""Delivering a feed revision: the consented individual list (decrypted at delivery), exports in JSON
and CSV (UTF-8 canonical; CP932 with CRLF for the spreadsheet programs authority staff use), and the
access log every delivery with personal data writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import asyncpg

from consumers import registers
from consumers.feed import store
from contracts.events import PlacementPersonal, RegistrationPersonal
from domain.agreements import Registers, Withheld, withheld
from domain.calendar import JST, month_bounds
from domain.consent import ConsentRecord, Recipient, Scope
from domain.feed import GROUP_LABELS_JA, INDICATORS, counts_for
from domain.occupation import OCCUPATION_GROUPS
from infra.codecs.csv_write import safe_rows
from infra.crypto import KeyStore, Opener

Encoding = Literal["utf-8", "cp932"]
CP932_SUBSTITUTE = "〓"  # 下駄記号 (geta mark): the conventional stand-in for a character a code page lacks
INDIVIDUAL_FIELDS = ("name", "employer", "start_date", "occupation", "route", "latest_retention_checkpoint")

ROUTE_JA = {"hello_work_referral": "紹介就職", "self_found": "自己就職"}
LABELS_JA: dict[str, dict[str, str]] = {
    # Attribute categories: the tables of revisions built before target groups (kept for reading them).
    "attribute": {
        "public_assistance": "生活保護受給者",
        "child_rearing_allowance": "児童扶養手当受給者",
        "housing_benefit": "住居確保給付金受給者",
        "needy_person_support": "生活困窮者",
        "disability": "障害者",
        "youth": "若者",
        "parenting": "子育て中の方",
        "general": "一般",
    },
    "sex": {"male": "男", "female": "女", "not_stated": "不詳"},
    "employment_type": {
        "regular_full_time": "正社員",
        "non_regular_full_time": "正社員以外フルタイム",
        "part_time": "パート",
        "temporary": "臨時・季節",
    },
    "route": ROUTE_JA,
    "occupation": {code: g.name_ja for code, g in OCCUPATION_GROUPS.items()},
    "referred": {"yes": "送り込みあり", "no": "送り込みなし"},
    "enrolment": {"at_registration": "登録時", "after_registration": "登録後（ケース会議）"},
    "status": {"employed": "定着", "left": "離職", "not_reported": "未報告"},
    "site": {"other_sites": "他団体の拠点・後から加わった拠点"},
    **{f"group:{g}": {"yes": "該当", "no": "非該当"} for g in GROUP_LABELS_JA},
}
DIM_LABELS_JA = {
    "site": "拠点",
    "sex": "男女",
    "age_band": "年齢階級",
    "occupation": "職業",
    "employment_type": "雇用形態",
    "referred": "送り込み",
    "enrolment": "チーム支援の開始",
    "status": "定着状況",
    **{f"group:{g}": f"支援対象者:{ja}" for g, ja in GROUP_LABELS_JA.items()},
}
POPULATION_LABELS_JA = {
    "referral_placements": "紹介就職",
    "self_found_placements": "自己就職",
    "new_job_seekers": "新規求職者",
    "team_support": "新規チーム支援対象者",
    "retention_1m": "定着（1か月）",
    "retention_3m": "定着（3か月）",
    "retention_6m": "定着（6か月）",
}


async def individual_list_declined(conn: asyncpg.Connection, authority: str) -> bool:
    """An authority may opt out of receiving the individual list (``hub feed individual-list off``)."""
    return bool(
        await conn.fetchval("SELECT true FROM feed_individual_list_opt_outs WHERE authority = $1", authority)
    )


class FeedNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Individual:
    person_key: str  # pseudonymous; for the access log only, never exported
    name: str
    employer: str
    start_date: date
    occupation: str
    route: str
    latest_retention_checkpoint: str | None


@dataclass
class Delivery:
    body: dict[str, Any]
    individuals: list[Individual] = field(default_factory=list)
    withheld_no_consent: int = 0
    withheld_no_agreement: int = 0  # consented, but no agreement in force covers the disclosure (A2)
    withheld_erased: int = 0
    declined: bool = False  # the authority opted out of receiving the individual list

    @property
    def person_keys(self) -> list[str]:
        return [i.person_key for i in self.individuals]


async def load_revision(
    conn: asyncpg.Connection, authority: str, month: str, revision: int | None = None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT authority, month, revision, horizon, body, placement_ids, built_at FROM feed_revisions "
        "WHERE authority = $1 AND month = $2 AND ($3::int IS NULL OR revision = $3) ORDER BY revision DESC LIMIT 1",
        authority,
        month,
        revision,
    )
    if row is None:
        which = f"revision {revision}" if revision else "any revision"
        raise FeedNotFound(
            f"no feed for authority {authority}, month {month} ({which}); run `hub feed build`"
        )
    return row


async def deliver(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    authority: str,
    month: str,
    revision: int | None = None,
    *,
    today: date | None = None,
) -> Delivery:
    """The revision's aggregates and its individual list: people this authority holds (P3), whose
    effective consent — as it stands now, behind the withdrawal fence written with any withdrawal's
    acceptance (P7), so a withdrawal takes effect at its 202 — lets it see their placement on the
    placement's date and today, and whose placing office shares ``disclose_placement`` with it under an
    agreement in force today (A2). Aggregates flow regardless (A4)."""
    row = await load_revision(conn, authority, month, revision)
    delivery = Delivery(body=dict(row["body"]))
    first, last = month_bounds(row["month"])
    # Of the placements with an id the revision lists, those it counted (``counts_for``, as
    # ``count_month`` applies it at the revision's horizon): placed in the month and sent by the
    # horizon, at one of the authority's sites or of a person it referred by the horizon and the month's
    # end. An id is not a placement: another person's placement reusing it (migration 046) — sent later,
    # placed in another month, referred later or by someone else — was not counted and is not weighed.
    placements = [
        p
        for p in await conn.fetch(
            "SELECT p.placement_id, p.person_key, p.placed_on, p.occupation, p.route, p.personal, p.site, "
            # The office that placed the person (A2); the registry's office of the site only for a
            # placement kept before migration 052 (a replay of the topics fills it in).
            "coalesce(p.office, s.office) AS office, EXISTS (SELECT FROM feed_referrals r WHERE r.person_key = p.person_key "
            "  AND r.authority = $2 AND r.arrived_at <= $5 AND r.referred_on <= $4) AS referred "
            "FROM feed_placements p LEFT JOIN sites s ON s.site_id = p.site "
            "WHERE p.placement_id = ANY($1::text[]) AND p.placed_on BETWEEN $3 AND $4 AND p.arrived_at <= $5 "
            "ORDER BY p.placed_on, p.placement_id, p.person_key",
            list(row["placement_ids"]),
            authority,
            first,
            last,
            row["horizon"],
        )
        if counts_for(authority, p["site"], (authority,) if p["referred"] else ())
    ]
    persons = list({p["person_key"] for p in placements})
    rules = _Disclosure(
        authority,
        consents=await store.consents.load(conn, persons),
        on_record=await registers.load(
            conn,
            persons,
            kind="authority",
            code=authority,
            authorities=[authority],
            today=today or datetime.now(JST).date(),
        ),
    )
    if await individual_list_declined(conn, authority):
        delivery.declined = True
        return delivery
    allowed = []
    for p in placements:
        why = rules.withheld(p, Scope.DISCLOSE_PLACEMENT, p["placed_on"])
        if why is None:
            allowed.append(p)
        elif why is Withheld.NO_AGREEMENT:
            delivery.withheld_no_agreement += 1
        else:
            delivery.withheld_no_consent += 1
    if allowed:
        await _open_individuals(conn, keystore, allowed, rules, delivery)
    return delivery


@dataclass(frozen=True)
class _Disclosure:
    """The one disclosure decision (``domain.agreements.withheld``) for one authority's feed, over the
    consents and registers loaded for the revision's people."""

    authority: str
    consents: dict[str, list[ConsentRecord]]
    on_record: Registers

    def withheld(self, p: asyncpg.Record, scope: Scope, day: date) -> Withheld | None:
        return withheld(
            p["person_key"],
            self.consents.get(p["person_key"], ()),
            self.on_record,
            scope,
            recipient=Recipient("authority", self.authority),
            authority=self.authority,
            office=p["office"],
            site=p["site"],
            on=day,
        )


async def _open_individuals(
    conn: asyncpg.Connection,
    keystore: KeyStore,
    allowed: Sequence[asyncpg.Record],
    rules: _Disclosure,
    delivery: Delivery,
) -> None:
    """The individual list's entries for the placements that may be disclosed: name and employer opened
    with the person's data key, and the latest retention checkpoint where retention support is shared."""
    people = [p["person_key"] for p in allowed]
    opener = Opener(await keystore.existing_keys(conn, people))
    names = {
        r["person_key"]: r["personal"]
        for r in await conn.fetch(
            "SELECT DISTINCT ON (person_key) person_key, personal FROM feed_registrations "
            "WHERE person_key = ANY($1::text[]) ORDER BY person_key, registered_on DESC, arrived_at DESC",
            people,
        )
    }
    checkpoints = {
        (r["placement_id"], r["person_key"]): r
        for r in await conn.fetch(
            "SELECT DISTINCT ON (placement_id, person_key) placement_id, person_key, checkpoint_months, "
            "status, checked_on "
            "FROM feed_retention WHERE (placement_id, person_key) IN "
            "(SELECT * FROM unnest($1::text[], $2::text[])) "  # its own person's (migration 045)
            "ORDER BY placement_id, person_key, checkpoint_months DESC",
            [p["placement_id"] for p in allowed],
            people,
        )
    }
    for p in allowed:
        pk = p["person_key"]
        reg = opener(pk, "registration", names[pk]) if pk in names else None
        plc = opener(pk, "placement", p["personal"])
        if reg is None or plc is None:
            # erased (key deleted), registration not received, or a block its contract refuses (a rogue
            # producer's: a NUL in the name) — withheld, never a failed list for everyone else
            delivery.withheld_erased += 1
            continue
        name = RegistrationPersonal.model_validate(reg).name
        employer = PlacementPersonal.model_validate(plc).employer_name
        cp = checkpoints.get((p["placement_id"], pk))
        retention = None
        # Checkpoints are shown only to an authority the person lets follow them up (定着支援).
        if cp is not None and rules.withheld(p, Scope.RETENTION_SUPPORT, cp["checked_on"]) is None:
            retention = f"{cp['checkpoint_months']}m {cp['status']} ({cp['checked_on'].isoformat()})"
        delivery.individuals.append(
            Individual(pk, name, employer, p["placed_on"], p["occupation"], p["route"], retention)
        )


async def record_access(
    conn: asyncpg.Connection,
    *,
    client_id: str,
    organisation: str,
    authority: str,
    month: str,
    revision: int | None,
    fields: Sequence[str],
    purpose: str,
    outcome: Literal["granted", "denied"],
    person_keys: Sequence[str] = (),
) -> None:
    await conn.execute(
        "INSERT INTO feed_access_log (client_id, organisation, authority, month, revision, fields, purpose, "
        "outcome, person_keys) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        client_id,
        organisation,
        authority,
        month,
        revision,
        list(fields),
        purpose,
        outcome,
        list(person_keys),
    )


# --- formats ------------------------------------------------------------------------------------------


def to_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "feed": delivery.body,
        "individual_list": {
            "basis": "people this authority holds whose consent covers disclose_placement to it on the placement "
            "date and today, under a data-sharing agreement in force with the placing office",
            "entries": [
                {
                    "name": i.name,
                    "employer": i.employer,
                    "start_date": i.start_date.isoformat(),
                    "occupation": i.occupation,
                    "route": i.route,
                    "latest_retention_checkpoint": i.latest_retention_checkpoint,
                }
                for i in delivery.individuals
            ],
            "withheld_without_consent": delivery.withheld_no_consent,
            "withheld_without_agreement": delivery.withheld_no_agreement,
            "declined_by_authority": delivery.declined,
            "withheld_erased": delivery.withheld_erased,
        },
    }


def _label(dim: str, category: str) -> str:
    if category == "計":
        return "計"
    return LABELS_JA.get(dim, {}).get(category, category)


def _indicator_ja(name: str) -> str:
    for i in INDICATORS:
        if i.name == name:
            return i.ja
        if "{k}" in i.name:
            for k in ("1", "3", "6"):
                if i.name.replace("{k}", k) == name:
                    return i.ja.replace("{k}", k)
    return name


def aggregates_rows(body: dict[str, Any]) -> list[list[str]]:
    """The revision as one sheet: every cell of every table (labelled in Japanese, suppressed ones
    empty with the reason), then the indicators per scope, then the targets."""
    rows = [["区分", "表", "分類1", "区分1", "分類2", "区分2", "値", "秘匿"]]
    for population, tables in (body.get("populations") or body.get("groups") or {}).items():
        for t in tables:
            dims = t["dims"]
            for key, value, reason in t["cells"]:
                labelled: list[str] = []
                for d, k in zip(dims, key, strict=True):
                    labelled += [DIM_LABELS_JA.get(d, d), _label(d, k)]
                labelled += [""] * (4 - len(labelled))
                rows.append([POPULATION_LABELS_JA.get(population, population), t["name"], *labelled,
                             "" if value is None else str(value), reason or ""])  # fmt: skip
    for scope, values in [
        ("authority", body["indicators"]["authority"]),
        *body["indicators"]["sites"].items(),
    ]:
        for name, value in values.items():
            if name == "by_group":
                for g, figures in value.items():
                    for n, v in figures.items():
                        rows.append(["指標", scope, f"支援対象者:{GROUP_LABELS_JA.get(g, g)}", _indicator_ja(n), "", "",
                                     "" if v is None else str(v), ""])  # fmt: skip
                continue
            rows.append(
                ["指標", scope, _indicator_ja(name), name, "", "", "" if value is None else str(value), ""]
            )
    for e in body["targets"]:
        for t in e.get("targets", ()):
            group = f"[{GROUP_LABELS_JA.get(t['group'], t['group'])}]" if t.get("group") else ""
            rows.append(["目標", e["scope"], f"{_indicator_ja(t['kind'])}{group}", f"目標={t['value']}",
                         f"FY{e['fiscal_year']}", t["status"], "" if t["result"] is None else str(t["result"]),
                         "評価対象外" if e["excluded"] else (e["achievement"] or e["pace"] or "")])  # fmt: skip
    return rows


def individual_rows(delivery: Delivery) -> list[list[str]]:
    rows = [["氏名", "就職先", "就職日", "職業(大分類)", "経路", "最新の定着確認"]]
    for i in delivery.individuals:
        occupation = f"{i.occupation} {LABELS_JA['occupation'].get(i.occupation, '')}"
        rows.append(
            [
                i.name,
                i.employer,
                i.start_date.isoformat(),
                occupation,
                ROUTE_JA.get(i.route, i.route),
                i.latest_retention_checkpoint or "",
            ]
        )
    return rows


def to_csv(rows: list[list[str]], encoding: Encoding) -> tuple[bytes, int]:
    """CSV with CRLF. CP932 cannot hold some characters of names (髙, 𠮷): each becomes 〓 and the count
    is returned so the caller can say so; the UTF-8 export stays the canonical, exact form."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(safe_rows(rows))
    text = buffer.getvalue()
    if encoding == "utf-8":
        return text.encode("utf-8"), 0
    substituted = 0
    out = bytearray()
    for ch in text:
        try:
            out += ch.encode("cp932")
        except UnicodeEncodeError:
            out += CP932_SUBSTITUTE.encode("cp932")
            substituted += 1
    return bytes(out), substituted
