"""The monthly placement feed (就職実績の提供) as the programme counts it: who counts, the populations and
their tables, the indicators with the report's definitions, target groups, targets and achievement,
revisions. No I/O: the builder reads rows, ``assemble`` turns them into facts, ``compose`` into a body.

Definitions follow the FY2015 report (``shared/seed/000_710836a85c6b4b72.txt``, line numbers ~l.N;
``docs/feed.md`` lists every indicator with its line):

* 就職件数 and 就職率 count placements through a Hello Work referral (紹介就職, ~l.932). Self-found jobs
  (自己就職) are reported beside them as 就職確認数 = 紹介就職 + 自己就職 (~l.606, 671–673, 709–711) and
  never enter 就職率. 就職率 = 紹介就職件数 / 新規求職者数 on one base: the same sites on both sides.
* A person who had already applied at another Hello Work office (~l.529–531) is not a new job seeker
  (新規求職者) of the joint site; their placements count as any other.
* Target groups (支援対象者, ~l.909–919, 871, 983) are not exclusive: a person counts in every group
  they belong to, and every table of groups also gives the number of distinct people.
* チーム支援対象者数 counts people newly enrolled in team support (新規チーム支援対象者, ~l.956): at
  registration, or later when the case conference decides (a referral's ``team_support_from``).

Who counts for an authority (the one rule, ``counts_for``): an event at one of its joint sites (拠点; a
site id starts with the running authority's code), or about a person the authority referred (送り込み).
A placement of someone A referred, made at a site of another authority, is counted in A's figures in
the site category ``OTHER_SITES``, outside the base of A's 就職率.
"""

from __future__ import annotations

import functools
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Protocol, cast

from domain.calendar import JST, AgeBand, YearMonth, age_band, age_on, fiscal_year, month_bounds
from domain.disclosure import (
    TOTAL,
    CellRef,
    Counted,
    SuppressedFeed,
    Table,
    count_many,
    revise_published,
    suppress_many,
)
from domain.occupation import CLASSIFICATION_VERSION

OTHER_SITES = "other_sites"  # placements of people the authority referred, made at another authority's site

SEXES = ("male", "female", "not_stated")
OCCUPATIONS = tuple(f"{i:02d}" for i in range(1, 16))
EMPLOYMENT_TYPES = ("regular_full_time", "non_regular_full_time", "part_time", "temporary")
REGULAR = "regular_full_time"  # 正社員
ROUTES = ("hello_work_referral", "self_found")
REFERRAL_ROUTE, SELF_FOUND_ROUTE = ROUTES
AGE_BANDS = tuple(b.value for b in AgeBand)
YES_NO = ("yes", "no")
ENROLMENT = ("at_registration", "after_registration")
RETENTION_CHECKPOINTS = (1, 3, 6)
RETENTION_STATUS = ("employed", "left", "not_reported")


# --- target groups ----------------------------------------------------------------------------------


class TargetGroup(StrEnum):
    """The report's target groups (支援対象者). Membership is not exclusive."""

    WELFARE = "welfare"  # 生活保護受給者等 (~l.909): incl. 児童扶養手当, 住宅支援給付 (今 住居確保給付金), 生活困窮者
    DISABILITY = "disability"  # 障害者 (~l.911)
    PARENTING = "parenting"  # 子育て中の者 (~l.913)
    YOUTH = "youth"  # 若年者 (~l.915)
    WOMEN = "women"  # 女性 (~l.871)
    MIDDLE_AGED = "middle_aged"  # 中高年 (~l.871)
    FOREIGN = "foreign"  # 外国人 (~l.919; 日系外国人 ~l.983)
    GENERAL = "general"  # 一般 (~l.917)
    OTHER = "other"  # その他 (~l.919): none of the groups above


TARGET_GROUPS = tuple(g.value for g in TargetGroup)
GROUP_LABELS_JA = {
    "welfare": "生活保護受給者等",
    "disability": "障害者",
    "parenting": "子育て中の者",
    "youth": "若年者",
    "women": "女性",
    "middle_aged": "中高年",
    "foreign": "外国人",
    "general": "一般",
    "other": "その他",
}
# 生活保護受給者等 is a roll-up (~l.909: "児童扶養手当・住宅支援給付受給者等を含む").
WELFARE_ATTRIBUTES = frozenset(
    {"public_assistance", "child_rearing_allowance", "housing_benefit", "needy_person_support"}
)
YOUTH_BANDS = frozenset({"19以下", "20-24", "25-29", "30-34"})  # 若年者: under 35
MIDDLE_AGED_BANDS = frozenset({"45-49", "50-54", "55-59", "60-64", "65以上"})  # 中高年齢者: 45 and over
GROUP_DIMS = tuple(f"group:{g}" for g in TARGET_GROUPS)


@functools.lru_cache(maxsize=65536)
def target_groups(attributes: tuple[str, ...], sex: str, age: str, foreign_national: bool) -> frozenset[str]:
    """Every target group a person belongs to, from what the registration or placement records."""
    attrs = set(attributes)
    groups = set()
    if attrs & WELFARE_ATTRIBUTES:
        groups.add("welfare")
    if "disability" in attrs:
        groups.add("disability")
    if attrs & {"parenting", "child_rearing_allowance"}:  # 児童扶養手当 is paid to people raising children
        groups.add("parenting")
    if "youth" in attrs or age in YOUTH_BANDS:
        groups.add("youth")
    if foreign_national:
        groups.add("foreign")
    if "general" in attrs:
        groups.add("general")
    if not groups:
        groups.add("other")
    if sex == "female":
        groups.add("women")
    if age in MIDDLE_AGED_BANDS:
        groups.add("middle_aged")
    return frozenset(groups)


@functools.lru_cache(maxsize=4096)  # a few hundred distinct sets of groups; a national month counts millions
def _group_flags(groups: frozenset[str]) -> tuple[str, ...]:
    return tuple("yes" if g in groups else "no" for g in TARGET_GROUPS)


def counts_for(authority: str, site: str, referred_by: Iterable[str]) -> bool:
    """The rule: an event at ``site`` about a person referred by ``referred_by`` counts for ``authority``."""
    return site[:6] == authority or authority in referred_by


@functools.lru_cache(maxsize=4096)  # the same few sets of keys in every body
def kept_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` in the order a body's objects hold them: by length in bytes, then by bytes (the order
    PostgreSQL's ``jsonb`` keeps them in; revisions are kept as the text written, migration 018, and every
    reader sees them as it saw them kept as ``jsonb``). A body is composed in this order (indicators,
    target groups' figures, targets, changes), so the builder writes it as it is (``builder._kept``);
    ``tests/unit/test_feed_kept_tables.py`` holds every kept body to the text of its keys reordered."""
    return tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))


def in_kept_order(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with its keys in ``kept_order`` (not its values')."""
    order = kept_order(tuple(value))
    return dict(zip(order, map(value.__getitem__, order), strict=True))


def age_band_on_placement(birth: date, placed_on: date) -> AgeBand:
    return age_band(age_on(birth, placed_on))


def prefecture_of(code: str) -> str:
    """The prefecture code (2 digits) of a local government code or site id."""
    return code[:2]


def is_prefecture(authority: str) -> bool:
    """A prefecture's own code has municipality part 000 (e.g. 130001 Tokyo)."""
    return authority[2:5] == "000"


# --- closing ---------------------------------------------------------------------------------------


def cutoff_instant(month: YearMonth, cutoff_day: int) -> datetime:
    """End of the cutoff day (JST) in the month after ``month``: events sent up to then are in revision 1."""
    y, m = (month.year + 1, 1) if month.month == 12 else (month.year, month.month + 1)
    return datetime.combine(date(y, m, cutoff_day) + timedelta(days=1), time(0), JST).astimezone(UTC)


def is_closed(month: YearMonth, cutoff_day: int, now: datetime) -> bool:
    return now >= cutoff_instant(month, cutoff_day)


def shift_month(month: YearMonth, delta: int) -> YearMonth:
    y, m = divmod(month.year * 12 + month.month - 1 + delta, 12)
    return YearMonth(y, m + 1)


def fiscal_months(month: YearMonth) -> tuple[date, date]:
    """From 1 April of ``month``'s fiscal year (年度) to the last day of ``month``."""
    first, last = month_bounds(month)
    return date(fiscal_year(first), 4, 1), last


def months_elapsed(month: YearMonth) -> int:
    """Months of the fiscal year up to and including ``month`` (April = 1, March = 12)."""
    return (month.month - 4) % 12 + 1


# --- facts --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacementFact:
    placement_id: str
    person_key: str
    site: str
    placed_on: date
    route: str
    occupation: str
    employment_type: str
    sex: str
    age_band: str
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class RegistrationFact:
    """A new job seeker (新規求職者) at a site; a prior application elsewhere is not one."""

    person_key: str
    site: str
    registered_on: date
    referred: bool  # referred by the authority running the site (送り込み)
    groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class TeamSupportFact:
    """A person newly enrolled in team support (新規チーム支援対象者) in the month, at ``site``."""

    person_key: str
    site: str
    since: date
    at_registration: bool


@dataclass(frozen=True)
class FeedInput:
    """Everything counted for one authority and month, as of one horizon."""

    authority: str
    month: YearMonth
    sites: tuple[str, ...]  # the authority's own sites
    placements: tuple[PlacementFact, ...] = ()  # placed in the month, counted for the authority
    registrations: tuple[RegistrationFact, ...] = ()  # new job seekers in the month at its sites
    team_support: tuple[TeamSupportFact, ...] = ()
    # Retention cohorts: placements counted for the authority in month − k, per checkpoint k, as (placement,
    # person, site): a placement is its own person's (two people's may share an id, migration 046).
    cohorts: Mapping[int, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)
    # (placement, person, k) -> status
    retention: Mapping[tuple[str, str, int], str] = field(default_factory=dict)
    layout: tuple[str, ...] | None = None  # own sites of revision 1's tables; None: revision 1 itself


class Row(Protocol):
    """A row read from the feed's projection (an ``asyncpg.Record`` or a dict)."""

    def __getitem__(self, key: str) -> Any: ...


@dataclass
class MonthRows:
    """The projection rows one month's feeds need, each with ``arrived_at`` (when it was sent)."""

    month: YearMonth
    placements: Sequence[Row]  # placed in the month, every column the tables count
    cohort_placements: Sequence[Row]  # placed in a retention cohort month (k): who counts them, where
    registrations: Sequence[Row]  # registered in the month
    referrals: Sequence[Row]  # referred by the end of the month
    team_support: Sequence[Row]  # enrolments (registration flag or later) since by the end of the month
    sites: Sequence[Row]  # every site seen, with when it was first sent
    retention: Sequence[Row]  # the checkpoint each cohort reports


@dataclass
class Assembled:
    inputs: dict[str, FeedInput]
    placement_ids: dict[str, list[str]]


Combinations = Mapping[tuple[str, ...], int]  # a combination of categories -> how many count in it


@dataclass(frozen=True)
class FeedCounts:
    """One authority's month as its tables and tallies need it: how many facts fall in each combination
    of categories, sites by id (their category in the tables depends on the layout). ``count_feed``
    makes it from the facts (the definition); the builder has the database count the same (tested
    equal, cell by cell, in ``tests/integration/test_feed_counts.py``)."""

    authority: str
    month: YearMonth
    sites: tuple[str, ...]  # the authority's own sites
    # (site, sex, age_band, occupation, employment_type, *group flags in TARGET_GROUPS order)
    referral: Combinations = field(default_factory=dict)
    self_found: Combinations = field(default_factory=dict)  # (site, employment_type)
    new: Combinations = field(default_factory=dict)  # (site, referred yes/no, *group flags)
    team: Combinations = field(default_factory=dict)  # (site, enrolment)
    retention: Mapping[int, Combinations] = field(default_factory=dict)  # k -> (site, status)
    layout: tuple[str, ...] | None = None  # as ``FeedInput.layout``


def group_flags(attributes: Sequence[str], sex: str, age: str, foreign_national: bool) -> tuple[str, ...]:
    """A person's membership of each target group, "yes"/"no" in ``TARGET_GROUPS`` order."""
    return _group_flags(target_groups(tuple(attributes), sex, age, foreign_national))


def count_feed(feed: FeedInput) -> FeedCounts:
    """The facts of one feed counted per combination of the categories its tables break down by."""
    referral: Counter[tuple[str, ...]] = Counter()
    self_found: Counter[tuple[str, ...]] = Counter()
    for p in feed.placements:
        if p.route == SELF_FOUND_ROUTE:
            self_found[(p.site, p.employment_type)] += 1
        else:
            referral[
                (p.site, p.sex, p.age_band, p.occupation, p.employment_type, *_group_flags(p.groups))
            ] += 1
    new: Counter[tuple[str, ...]] = Counter(
        (r.site, "yes" if r.referred else "no", *_group_flags(r.groups)) for r in feed.registrations
    )
    team: Counter[tuple[str, ...]] = Counter(
        (t.site, ENROLMENT[0] if t.at_registration else ENROLMENT[1]) for t in feed.team_support
    )
    retention: dict[int, Combinations] = {
        k: Counter[tuple[str, ...]](
            (site, feed.retention.get((pid, person, k), "not_reported"))
            for pid, person, site in feed.cohorts.get(k, ())
        )
        for k in RETENTION_CHECKPOINTS
    }
    return FeedCounts(
        feed.authority, feed.month, feed.sites, referral, self_found, new, team, retention, feed.layout
    )


def assemble(rows: MonthRows, horizon: datetime, keep: Callable[[str], bool] | None = None) -> Assembled:
    """Split the month's rows, as sent by ``horizon``, into each authority's feed input (every
    authority with facts, or those ``keep`` accepts)."""
    month = rows.month
    first, last = month_bounds(month)
    wanted = keep or (lambda _: True)
    referrers: dict[str, set[str]] = defaultdict(set)
    for r in rows.referrals:
        if r["arrived_at"] <= horizon:
            referrers[r["person_key"]].add(r["authority"])
    referred_by: dict[str, frozenset[str]] = {p: frozenset(a) for p, a in referrers.items()}
    sites: dict[str, list[str]] = defaultdict(list)
    for r in rows.sites:
        if r["arrived_at"] <= horizon:
            sites[r["site"][:6]].append(r["site"])

    def owners(p: Row) -> Iterable[str]:
        """The authorities a placement counts for (``counts_for``), among those wanted."""
        site, home = p["site"], p["site_authority"]
        refs = referred_by.get(p["person_key"])
        if refs is None:  # most people: only the authority of the site can count them
            return (home,) if wanted(home) else ()
        return [a for a in {home, *refs} if wanted(a) and counts_for(a, site, refs)]

    current: dict[str, list[PlacementFact]] = defaultdict(list)
    placement_ids: dict[str, list[str]] = defaultdict(list)
    for p in rows.placements:
        if p["arrived_at"] > horizon:
            continue
        counted = owners(p)
        if not counted:
            continue
        fact = PlacementFact(
            placement_id=p["placement_id"],
            person_key=p["person_key"],
            site=p["site"],
            placed_on=p["placed_on"],
            route=p["route"],
            occupation=p["occupation"],
            employment_type=p["employment_type"],
            sex=p["sex"],
            age_band=p["age_band"],
            groups=target_groups(
                tuple(p["attributes"]), p["sex"], p["age_band"], bool(p["foreign_national"])
            ),
        )
        for authority in counted:
            current[authority].append(fact)
            placement_ids[authority].append(fact.placement_id)
    cohorts: dict[str, dict[int, list[tuple[str, str, str]]]] = defaultdict(lambda: defaultdict(list))
    for p in rows.cohort_placements:
        if p["arrived_at"] <= horizon:
            for authority in owners(p):
                cohorts[authority][p["k"]].append((p["placement_id"], p["person_key"], p["site"]))
    regs: dict[str, list[RegistrationFact]] = defaultdict(list)
    for g in rows.registrations:
        authority = g["authority"]
        if g["arrived_at"] > horizon or not wanted(authority) or g["prior_application_office"] is not None:
            continue
        refs = referred_by.get(g["person_key"])
        regs[authority].append(
            RegistrationFact(
                g["person_key"],
                g["site"],
                g["registered_on"],
                refs is not None and authority in refs,
                target_groups(tuple(g["attributes"]), g["sex"], g["age_band"], bool(g["foreign_national"])),
            )
        )
    # New in team support: the person's first enrolment with the authority falls in the month.
    earliest: dict[tuple[str, str], tuple[date, bool, str]] = {}
    for t in rows.team_support:
        if t["arrived_at"] > horizon or not wanted(t["authority"]):
            continue
        key = (t["authority"], t["person_key"])
        candidate = (t["since"], not t["at_registration"], t["site"])  # at registration first on a tie
        if key not in earliest or candidate < earliest[key]:
            earliest[key] = candidate
    team: dict[str, list[TeamSupportFact]] = defaultdict(list)
    for (authority, person), (since, later, site) in sorted(earliest.items()):
        if first <= since <= last:
            team[authority].append(TeamSupportFact(person, site, since, not later))
    status = {
        (r["placement_id"], r["person_key"], r["checkpoint_months"]): r["status"]
        for r in rows.retention
        if r["arrived_at"] <= horizon
    }
    inputs: dict[str, FeedInput] = {}
    for authority in set(current) | set(regs) | set(team):
        cohort = {k: tuple(v) for k, v in cohorts[authority].items()}
        inputs[authority] = FeedInput(
            authority=authority,
            month=month,
            sites=tuple(sorted(sites.get(authority, ()))),
            placements=tuple(current[authority]),
            registrations=tuple(regs[authority]),
            team_support=tuple(team[authority]),
            cohorts=cohort,
            retention={
                (pid, person, k): status[(pid, person, k)]
                for k, ids in cohort.items()
                for pid, person, _ in ids
                if (pid, person, k) in status
            },
        )
    return Assembled(inputs, placement_ids)


# --- populations and their tables ---------------------------------------------------------------------


class Population(StrEnum):
    """The populations a feed counts; each is protected as its own linked system of tables."""

    REFERRAL_PLACEMENTS = "referral_placements"  # 紹介就職: placed in the month through a Hello Work referral
    SELF_FOUND_PLACEMENTS = "self_found_placements"  # 自己就職: placed in the month, found by themselves
    NEW_JOB_SEEKERS = "new_job_seekers"  # 新規求職者: registered in the month (no prior application)
    TEAM_SUPPORT = "team_support"  # 新規チーム支援対象者: newly enrolled in the month
    RETENTION_1M = "retention_1m"  # 定着: placements of month − 1 at their 1-month checkpoint
    RETENTION_3M = "retention_3m"
    RETENTION_6M = "retention_6m"


POPULATIONS = tuple(p.value for p in Population)
# Later revisions only add people to these (no corrections of placements in the contract).
MONOTONE_POPULATIONS = ("referral_placements", "self_found_placements")

_PLACEMENT_ONE_WAY = ("sex", "age_band", "occupation", "employment_type", *GROUP_DIMS)
_PLACEMENT_CROSS = (("occupation", "sex"), ("age_band", "sex"), ("employment_type", "sex"))


def site_category(authority: str, site: str, layout: Sequence[str] | None = None) -> str:
    """A site's category in its authority's tables: the site number ("01" for 131041-01), so feeds of
    authorities with the same number of sites share one table layout. Other authorities' sites, and own
    sites the feed's layout does not list (first seen after its revision 1), are one category."""
    if site[:6] != authority or (layout is not None and site not in layout):
        return OTHER_SITES
    return site[7:]


def layout_sites(feed: FeedInput | FeedCounts) -> tuple[str, ...]:
    """The own sites the tables break down by: fixed at revision 1 (``FeedInput.layout``), so every
    revision of a month has the same tables (what makes revisions safe, ``domain.disclosure.revise``)."""
    return feed.layout if feed.layout is not None else feed.sites


def site_categories(feed: FeedInput | FeedCounts) -> list[str]:
    """Own site numbers, then ``OTHER_SITES`` (always present, so the layout never changes)."""
    return [site_category(feed.authority, s) for s in layout_sites(feed)] + [OTHER_SITES]


class _SiteCategories(dict[str, str]):
    """A feed's site ids -> their category in its tables (``site_category``), worked out when first asked."""

    def __init__(self, authority: str, layout: Sequence[str]) -> None:
        super().__init__()
        self.authority, self.layout = authority, layout

    def __missing__(self, site: str) -> str:
        self[site] = c = site_category(self.authority, site, self.layout)
        return c


def _populations(sites: Sequence[str]) -> list[tuple[str, dict[str, Sequence[str]], list[tuple[str, ...]]]]:
    """Each population's name, categories (the first, ``site``, is a feed's site categories) and tables:
    one-way tables, cross-tables, and site × each one-way dimension (its rows are the site figures, its
    column margins the authority's one-way tables, so both are suppressed as one system)."""
    yes_no = dict.fromkeys(GROUP_DIMS, YES_NO)
    specs: list[tuple[str, dict[str, Sequence[str]], Sequence[str], Sequence[tuple[str, str]]]] = [
        ("referral_placements", {"site": sites, "sex": SEXES, "age_band": AGE_BANDS, "occupation": OCCUPATIONS,
         "employment_type": EMPLOYMENT_TYPES, **yes_no}, _PLACEMENT_ONE_WAY, _PLACEMENT_CROSS),
        ("self_found_placements", {"site": sites, "employment_type": EMPLOYMENT_TYPES}, ("employment_type",), ()),
        ("new_job_seekers", {"site": sites, "referred": YES_NO, **yes_no}, ("referred", *GROUP_DIMS), ()),
        ("team_support", {"site": sites, "enrolment": ENROLMENT}, ("enrolment",), ()),
        *((f"retention_{k}m", {"site": sites, "status": RETENTION_STATUS}, ("status",), ())
          for k in RETENTION_CHECKPOINTS),
    ]  # fmt: skip
    return [
        (name, categories, [*((d,) for d in one_way), *cross, *(("site", d) for d in one_way)])
        for name, categories, one_way, cross in specs
    ]


def _combinations(feed: FeedCounts, population: str) -> Combinations:
    if population.startswith("retention_"):
        return feed.retention.get(int(population.removeprefix("retention_").removesuffix("m")), {})
    return {
        "referral_placements": feed.referral,
        "self_found_placements": feed.self_found,
        "new_job_seekers": feed.new,
        "team_support": feed.team,
    }[population]


def population_counts(feeds: Sequence[FeedCounts]) -> list[dict[str, Counted]]:
    """Every population's tables of each feed, counted with their structure (``count_many``) for all
    the feeds of one layout at a time."""
    out: list[dict[str, Counted]] = [{} for _ in feeds]
    by_layout: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for n, feed in enumerate(feeds):
        by_layout[tuple(site_categories(feed))].append(n)
    for sites, members in by_layout.items():
        recode = [_SiteCategories(feeds[n].authority, layout_sites(feeds[n])) for n in members]
        for name, categories, layout in _populations(sites):
            counted = count_many(
                [_combinations(feeds[n], name) for n in members],
                categories,
                layout,
                prefix=f"{name}: ",
                recode=recode,
            )
            for n, c in zip(members, counted, strict=True):
                out[n][name] = c
    return out


def population_tables(feed: FeedInput | FeedCounts) -> dict[str, tuple[Table, ...]]:
    """Every population's tables for one feed."""
    counted = feed if isinstance(feed, FeedCounts) else count_feed(feed)
    return {name: c.tables for name, c in population_counts([counted])[0].items()}


# --- indicators ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indicator:
    name: str
    ja: str
    definition: str
    seed_lines: str


INDICATORS: tuple[Indicator, ...] = (
    Indicator("new_job_seekers", "新規求職者数", "people who applied as job seekers at the site(s) in the month; "
              "a person who had already applied at another Hello Work office is not counted", "~l.611, 669, 529–531"),
    Indicator("referred_by_authority", "うち自治体からの送り込み", "of the new job seekers, those the authority "
              "running the site referred (送り込み) by the end of the month", "~l.105, 434"),
    Indicator("referral_share", "送り込み割合（連携指標）", "referred_by_authority / new_job_seekers", "~l.103–105, 433–434"),
    Indicator("team_support", "チーム支援対象者数（新規）", "people newly enrolled in team support in the month, at "
              "registration or later by the case conference; each person once", "~l.105, 596–597, 956"),
    Indicator("referral_placements", "紹介就職件数（就職件数）", "placements in the month through a Hello Work "
              "referral; at authority level including people it referred who were placed at another authority's "
              "site", "~l.9, 671, 932"),
    Indicator("self_found_placements", "自己就職件数", "placements in the month the person found without a "
              "Hello Work referral", "~l.606, 709–711"),
    Indicator("confirmed_placements", "就職確認数（自己就職を含む）", "referral_placements + self_found_placements, "
              "reported beside 就職件数, never used in 就職率", "~l.606, 673, 709–711"),
    Indicator("placement_rate", "就職率", "referral_placements / new_job_seekers, both over the same sites "
              "(at authority level its own sites: placements at other authorities' sites are outside the base); "
              "compare with Hello Work's overall 31.1%", "~l.100, 107, 612, 932"),
    Indicator("regular_placements", "正社員就職件数", "referral placements into regular employment (正社員)", "~l.681"),
    Indicator("retention_{k}m_cohort", "定着確認対象（{k}か月）", "placements counted for the authority k months "
              "before (k = 1, 3, 6)", "~l.582–584"),
    Indicator("retention_{k}m_employed", "定着者数（{k}か月）", "of the cohort, still employed at the k-month "
              "checkpoint", "~l.582–584"),
    Indicator("retention_{k}m_rate", "定着率（{k}か月）", "retention_{k}m_employed / retention_{k}m_cohort", "~l.582–584"),
    Indicator("by_group.<group>.new_job_seekers", "支援対象者別 新規求職者数", "new job seekers in the target "
              "group (every group a person belongs to)", "~l.909–919"),
    Indicator("by_group.<group>.referral_placements", "支援対象者別 就職件数", "referral placements in the "
              "target group; the groups overlap, referral_placements is the number of distinct people",
              "~l.9–10, 909–923, 930"),
    Indicator("by_group.<group>.placement_rate", "支援対象者別 就職率", "the group's referral placements / its "
              "new job seekers, same base as placement_rate", "~l.959, 982–983"),
)  # fmt: skip


def ratio(numerator: int | None, denominator: int | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 4)


def _minus(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


class _Published:
    """Reads published cells of a feed's site × dimension tables; None where hidden or absent."""

    # The cells indicators read, named once: a national build reads ~450,000.
    _refs: ClassVar[dict[tuple[str, str, str, str], CellRef]] = {}

    def __init__(self, populations: Mapping[str, SuppressedFeed]) -> None:
        # Each population's cell positions and published values, read without a call per cell.
        self.cells = {name: s.positions() for name, s in populations.items()}

    def __call__(self, population: str, dim: str, row: str, column: str) -> int | None:
        key = (population, dim, row, column)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = CellRef(f"{population}: site × {dim}", (row, column))
        index, values = self.cells[population]
        i = index.get(ref)
        return None if i is None else values[i]

    def at(self, row: str) -> Callable[[str, str, str, str], int | None]:
        """``self`` for ``indicators`` of ``row``: the cells it reads of that row (and of the other
        sites' row, for the authority's) fetched per population at once (``_reads``); any other cell
        read as ``self`` reads it. A national build reads ~450,000 cells, ~40 for each of ~9,000 rows."""
        got: dict[tuple[str, str, str, str], int | None] = {}
        rows = (row, OTHER_SITES) if row == TOTAL else (row,)
        for population, (index, values) in self.cells.items():
            keys, pick = _reads(population, rows, index)
            if keys:
                got.update(zip(keys, pick(values), strict=True))

        def read(population: str, dim: str, row: str, column: str) -> int | None:
            found = got.get((population, dim, row, column), _UNREAD)
            return self(population, dim, row, column) if found is _UNREAD else found  # type: ignore[return-value]

        return read


_UNREAD = object()
# The cells ``indicators`` reads of a row, per population: (dimension, column).
_INDICATOR_CELLS: dict[str, tuple[tuple[str, str], ...]] = {
    "new_job_seekers": (("referred", TOTAL), ("referred", "yes"), *((d, "yes") for d in GROUP_DIMS)),
    "referral_placements": (
        ("employment_type", TOTAL), ("employment_type", REGULAR), *((d, "yes") for d in GROUP_DIMS)
    ),
    "self_found_placements": (("employment_type", TOTAL),),
    "team_support": (("enrolment", TOTAL),),
    **{f"retention_{k}m": (("status", TOTAL), ("status", "employed")) for k in RETENTION_CHECKPOINTS},
}  # fmt: skip
_read_plans: dict[tuple[str, tuple[str, ...], int], tuple[Any, ...]] = {}


def _reads(
    population: str, rows: tuple[str, ...], index: Mapping[CellRef, int]
) -> tuple[list[tuple[str, str, str, str]], Callable[[Sequence[int | None]], Sequence[int | None]]]:
    """The cells of ``population`` that ``indicators`` reads at ``rows`` and are in the layout whose cell
    positions are ``index`` (names, and a getter of their values from the published values in the
    layout's order): worked out once per layout, population and rows (a handful in a national build)."""
    plan = _read_plans.get((population, rows, id(index)))
    if plan is not None and plan[0] is index:  # the same layout's index (not one reusing its id)
        return plan[1], plan[2]
    keys, positions = [], []
    for row in rows:
        for dim, column in _INDICATOR_CELLS.get(population, ()):
            i = index.get(CellRef(f"{population}: site × {dim}", (row, column)))
            if i is not None:
                keys.append((population, dim, row, column))
                positions.append(i)
    if len(_read_plans) >= 4096:
        _read_plans.clear()
    pick: Callable[[Sequence[int | None]], Sequence[int | None]]
    if len(positions) == 1:
        only = positions[0]
        pick = lambda values: (values[only],)  # noqa: E731 - itemgetter of one position gives no tuple
    else:
        pick = operator.itemgetter(*positions) if positions else (lambda values: ())
    _read_plans[(population, rows, id(index))] = (index, keys, pick)
    return keys, pick


def indicators(populations: Mapping[str, SuppressedFeed] | _Published, row: str) -> dict[str, Any]:
    """The programme's indicators for the authority (``row`` TOTAL) or one site (its category), read from
    the published cells, so an indicator never shows what a table hides; None where a count is hidden.
    Derived figures (a difference, a sum, a ratio) of published counts reveal nothing more."""
    get = (populations if isinstance(populations, _Published) else _Published(populations)).at(row)

    def base(a: int | None, population: str, dim: str, column: str) -> int | None:
        """A count as 就職率's base takes it: the authority's own sites only (less the other sites'
        figure); a site's as it is (the other sites' figure is then not read)."""
        return _minus(a, get(population, dim, OTHER_SITES, column)) if row == TOTAL else a

    new = get("new_job_seekers", "referred", row, TOTAL)
    referred = get("new_job_seekers", "referred", row, "yes")
    placed = get("referral_placements", "employment_type", row, TOTAL)
    self_found = get("self_found_placements", "employment_type", row, TOTAL)
    out: dict[str, Any] = {
        "new_job_seekers": new,
        "referred_by_authority": referred,
        "referral_share": ratio(referred, new),
        "team_support": get("team_support", "enrolment", row, TOTAL),
        "referral_placements": placed,
        "self_found_placements": self_found,
        "confirmed_placements": None if placed is None or self_found is None else placed + self_found,
        "placement_rate": ratio(
            base(placed, "referral_placements", "employment_type", TOTAL),
            base(new, "new_job_seekers", "referred", TOTAL),
        ),
        "regular_placements": get("referral_placements", "employment_type", row, REGULAR),
    }
    for k in RETENTION_CHECKPOINTS:
        cohort = get(f"retention_{k}m", "status", row, TOTAL)
        employed = get(f"retention_{k}m", "status", row, "employed")
        out[f"retention_{k}m_cohort"] = cohort
        out[f"retention_{k}m_employed"] = employed
        out[f"retention_{k}m_rate"] = ratio(employed, cohort)
    by_group: dict[str, dict[str, Any]] = {}
    for g, dim in _GROUPS_KEPT:
        g_new = get("new_job_seekers", dim, row, "yes")
        g_placed = get("referral_placements", dim, row, "yes")
        by_group[g] = {  # in kept order (``kept_order``)
            "placement_rate": ratio(
                base(g_placed, "referral_placements", dim, "yes"),
                base(g_new, "new_job_seekers", dim, "yes"),
            ),
            "new_job_seekers": g_new,
            "referral_placements": g_placed,
        }
    out["by_group"] = by_group
    return in_kept_order(out)


# The target groups in kept order (``kept_order``), with their dimensions.
_GROUPS_KEPT = tuple(
    sorted(zip(TARGET_GROUPS, GROUP_DIMS, strict=True), key=lambda g: (len(g[0].encode()), g[0].encode()))
)


# --- targets and achievement ---------------------------------------------------------------------------


class TargetKind(StrEnum):
    """Kinds of yearly targets a steering council (運営協議会) sets (~l.17–19, 665–706, 956–1007)."""

    NEW_JOB_SEEKERS = "new_job_seekers"  # 新規求職申込者数 (~l.669)
    REFERRAL_PLACEMENTS = "referral_placements"  # 紹介就職件数 / 就職者数 (~l.671, 962, 1007)
    CONFIRMED_PLACEMENTS = "confirmed_placements"  # 就職確認数, incl. 自己就職 (~l.673)
    REGULAR_PLACEMENTS = "regular_placements"  # 正社員就職者数 (~l.681)
    TEAM_SUPPORT = "team_support"  # 支援対象者数 / 新規チーム支援対象者数 (~l.956, 1006)
    REFERRAL_SHARE = "referral_share"  # 連携指標: share of new job seekers sent by the authority (~l.433–434)
    PLACEMENT_RATE = "placement_rate"  # 就職率, overall or of a target group (~l.959, 982–983)


RATE_KINDS = frozenset({TargetKind.REFERRAL_SHARE, TargetKind.PLACEMENT_RATE})
GROUP_KINDS = frozenset(
    {TargetKind.NEW_JOB_SEEKERS, TargetKind.REFERRAL_PLACEMENTS, TargetKind.PLACEMENT_RATE}
)


@dataclass(frozen=True, slots=True)
class Target:
    """One yearly target of a site (``scope`` a site id) or an authority (a local government code)."""

    scope: str
    fiscal_year: int
    kind: TargetKind
    value: float  # a count, or a fraction from 0 to 1 for a rate
    group: str | None = None  # a target group, for kinds counted per group

    def __post_init__(self) -> None:
        kind = TargetKind(self.kind)
        if self.value < 0:
            raise ValueError(f"target {kind.value}: value {self.value} is negative")
        if kind in RATE_KINDS and self.value > 1:
            raise ValueError(f"target {kind.value}: value {self.value} must be a fraction from 0 to 1")
        if kind not in RATE_KINDS and self.value != int(self.value):
            raise ValueError(f"target {kind.value}: value {self.value} must be a whole number")
        if self.group is not None:
            if self.group not in TARGET_GROUPS:
                raise ValueError(f"target group {self.group!r} is not one of {list(TARGET_GROUPS)}")
            if kind not in GROUP_KINDS:
                raise ValueError(f"target {kind.value} is not counted per target group")

    @property
    def is_site(self) -> bool:
        return len(self.scope) == 9


@dataclass(frozen=True, slots=True)
class Tally:
    """A scope's true counts over some months (never published as such: the feed shows each only when
    it may, see ``published_result``)."""

    new_job_seekers: int = 0
    referred: int = 0
    team_support: int = 0
    referral_placements: int = 0
    self_found_placements: int = 0
    regular_placements: int = 0
    group_new: tuple[int, ...] = (0,) * len(TARGET_GROUPS)
    group_placements: tuple[int, ...] = (0,) * len(TARGET_GROUPS)

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.new_job_seekers + other.new_job_seekers,
            self.referred + other.referred,
            self.team_support + other.team_support,
            self.referral_placements + other.referral_placements,
            self.self_found_placements + other.self_found_placements,
            self.regular_placements + other.regular_placements,
            tuple(a + b for a, b in zip(self.group_new, other.group_new, strict=True)),
            tuple(a + b for a, b in zip(self.group_placements, other.group_placements, strict=True)),
        )

    def to_json(self) -> list[Any]:
        return [self.new_job_seekers, self.referred, self.team_support, self.referral_placements,
                self.self_found_placements, self.regular_placements, list(self.group_new),
                list(self.group_placements)]  # fmt: skip

    @classmethod
    def from_json(cls, v: Sequence[Any]) -> Tally:
        return cls(int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), int(v[5]), tuple(v[6]), tuple(v[7]))

    def counts(self, kind: TargetKind, group: str | None) -> tuple[int, int | None]:
        """(numerator, denominator or None for a count) of a target kind."""
        g = TARGET_GROUPS.index(group) if group is not None else None
        if kind is TargetKind.NEW_JOB_SEEKERS:
            return (self.new_job_seekers if g is None else self.group_new[g]), None
        if kind is TargetKind.REFERRAL_PLACEMENTS:
            return (self.referral_placements if g is None else self.group_placements[g]), None
        if kind is TargetKind.CONFIRMED_PLACEMENTS:
            return self.referral_placements + self.self_found_placements, None
        if kind is TargetKind.REGULAR_PLACEMENTS:
            return self.regular_placements, None
        if kind is TargetKind.TEAM_SUPPORT:
            return self.team_support, None
        if kind is TargetKind.REFERRAL_SHARE:
            return self.referred, self.new_job_seekers
        if g is None:
            return self.referral_placements, self.new_job_seekers
        return self.group_placements[g], self.group_new[g]


@functools.lru_cache(maxsize=4096)  # a few hundred combinations of group flags in a national month
def _yes_at(flags: tuple[str, ...]) -> tuple[int, ...]:
    """The positions of the groups a combination's flags say "yes" to."""
    return tuple(i for i, flag in enumerate(flags) if flag == "yes")


def site_tallies(feed: FeedInput | FeedCounts) -> dict[str, Tally]:
    """The month's true counts per own site (all of them, not only revision 1's layout). An authority's
    results are the sum over its own sites: the same base as its 就職率."""
    counted = feed if isinstance(feed, FeedCounts) else count_feed(feed)
    authority = counted.authority
    new: dict[str, int] = {}
    referred: dict[str, int] = {}
    team: dict[str, int] = {}
    placed: dict[str, int] = {}
    self_found: dict[str, int] = {}
    regular: dict[str, int] = {}
    # (site, group flags) -> how many: the groups' sums are then added up from these, fewer than the
    # combinations (a feed's ~60 combinations of placements' categories share a handful of flags).
    new_flags: dict[tuple[str, tuple[str, ...]], int] = {}
    placed_flags: dict[tuple[str, tuple[str, ...]], int] = {}
    for key, n in counted.new.items():
        site = key[0]
        new[site] = new.get(site, 0) + n
        if key[1] == "yes":
            referred[site] = referred.get(site, 0) + n
        at = (site, key[2:])
        new_flags[at] = new_flags.get(at, 0) + n
    for (site, _), n in counted.team.items():
        team[site] = team.get(site, 0) + n
    for (site, _), n in counted.self_found.items():
        if site[:6] == authority:
            self_found[site] = self_found.get(site, 0) + n
    for key, n in counted.referral.items():
        site = key[0]
        if site[:6] != authority:
            continue
        placed[site] = placed.get(site, 0) + n
        if key[4] == REGULAR:
            regular[site] = regular.get(site, 0) + n
        at = (site, key[5:])
        placed_flags[at] = placed_flags.get(at, 0) + n
    group_new, group_placed = _group_sums(new_flags), _group_sums(placed_flags)
    none = (0,) * len(TARGET_GROUPS)
    sites = {s for c in (new, team, placed, self_found) for s, n in c.items() if n}
    return {
        s: Tally(new.get(s, 0), referred.get(s, 0), team.get(s, 0), placed.get(s, 0), self_found.get(s, 0),
                 regular.get(s, 0), group_new.get(s, none), group_placed.get(s, none))
        for s in sorted(sites)
    }  # fmt: skip


def _group_sums(by_flags: Mapping[tuple[str, tuple[str, ...]], int]) -> dict[str, tuple[int, ...]]:
    """Per site, how many belong to each target group (``TARGET_GROUPS`` order), from how many have each
    combination of group flags there."""
    sums: dict[str, list[int]] = {}
    for (site, flags), n in by_flags.items():
        row = sums.get(site)
        if row is None:
            row = sums[site] = [0] * len(TARGET_GROUPS)
        for i in _yes_at(flags):
            row[i] += n
    return {site: tuple(row) for site, row in sums.items()}


class Pace(StrEnum):
    MET = "met"  # the full-year target is already reached
    ON_PACE = "on_pace"  # at least the share of the year gone by (rates: at least the target)
    BEHIND = "behind"


class Achievement(StrEnum):
    """Year-end classes (~l.79–81)."""

    ALL_MET = "all_met"  # 全達成: every target met
    PARTLY_MET = "partly_met"  # 一部達成: some met
    NONE_MET = "none_met"  # 未達成: none met


ACHIEVEMENT_JA = {
    "all_met": "全達成",
    "partly_met": "一部達成",
    "none_met": "未達成",
    "on_pace": "順調（年度途中）",
    "behind": "遅れ（年度途中）",
    "excluded": "評価対象外",
}


def pace(target: Target, results: Tally, month: YearMonth) -> Pace:
    """Where a target stands after ``month``: a count is on pace with the months gone by (8 of 12 in
    November), a rate when it is at the target already."""
    n, d = results.counts(TargetKind(target.kind), target.group)
    if d is not None:
        rate = n / d if d else None
        return Pace.MET if rate is not None and rate >= target.value else Pace.BEHIND
    if n >= target.value:
        return Pace.MET
    return Pace.ON_PACE if n * 12 >= target.value * months_elapsed(month) else Pace.BEHIND


def achievement(statuses: Sequence[Pace]) -> Achievement:
    """The class of a set of targets at year end: every one met, some, or none."""
    met = [s is Pace.MET for s in statuses]
    if all(met):
        return Achievement.ALL_MET
    return Achievement.PARTLY_MET if any(met) else Achievement.NONE_MET


def published_result(target: Target, results: Tally, threshold: int) -> int | float | None:
    """A result as the feed may show it: a count when 0 or at least the threshold, a rate when both its
    counts may be shown (see docs/disclosure.md, known limits)."""
    n, d = results.counts(TargetKind(target.kind), target.group)

    def ok(v: int) -> bool:
        return v == 0 or v >= threshold

    if d is None:
        return n if ok(n) else None
    return ratio(n, d) if ok(n) and ok(d) else None


def evaluate(
    scope: str,
    targets: Sequence[Target],
    results: Tally,
    month: YearMonth,
    threshold: int,
    *,
    excluded: bool = False,
) -> dict[str, Any]:
    """One unit's (site's or authority's) targets after ``month``: each target's result so far and pace,
    the unit's pace (on pace when no target is behind), and at year end (March) its class. A unit left
    out of the evaluation (new that year, ~l.12–15) shows its results but no class."""
    rows = []
    statuses = []
    for t in targets:
        status = pace(t, results, month)
        statuses.append(status)
        rows.append({"kind": str(t.kind), "group": t.group, "value": t.value,  # in kept order (``kept_order``)
                     "result": published_result(t, results, threshold), "status": status.value})  # fmt: skip
    year_end = months_elapsed(month) == 12
    return in_kept_order(
        {
            "scope": scope,
            "fiscal_year": targets[0].fiscal_year if targets else fiscal_year(month_bounds(month)[0]),
            "excluded": excluded,
            "targets": rows,
            "pace": None if excluded else ("behind" if Pace.BEHIND in statuses else "on_pace"),
            "achievement": None if excluded or not year_end or not statuses else achievement(statuses).value,
        }
    )


# --- composing a revision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Composed:
    # The body less its populations' tables (``populations`` holds None): ``body`` adds them.
    head: dict[str, Any]
    populations: Mapping[str, SuppressedFeed]  # each population's published cells
    tallies: dict[str, Any]  # the month's true counts per own site (kept, never published)
    # What changed since the previous revision (``revision_changes``); empty for revision 1.
    changes: list[dict[str, object]] = field(default_factory=list)

    @functools.cached_property
    def body(self) -> dict[str, Any]:
        """The revision's body, its tables' cells as rows of (key, value, reason). Made only where read:
        the builder writes a kept body's tables from ``populations`` (a row per cell of ~1.9 million
        in a national month)."""
        return dict(self.head, populations={name: _table_json(s) for name, s in self.populations.items()})

    @functools.cached_property
    def suppressed(self) -> list[list[Any]]:
        """[table, key] of every hidden cell, for the next revision: each population's in sorted order.
        Made only where read: the builder writes their text from ``populations``."""
        return [
            [ref.table, list(ref.key)] for s in self.populations.values() for ref in s.suppressed_in_order()
        ]

    @functools.cached_property
    def figures(self) -> dict[str, Any]:
        """Flat view for change summaries; worked out only where there is a revision to compare with
        (a national month's revision 1 has none)."""
        return figures(self.body)


@dataclass(frozen=True)
class Job:
    """One feed to compose: its facts, the previous revision's body (None for revision 1), the targets
    of the authority and its sites, their results in the fiscal year's earlier months, and the units
    left out of the evaluation."""

    feed: FeedInput | FeedCounts  # facts, or facts already counted
    previous: Mapping[str, Any] | None = None
    targets: Sequence[Target] = ()
    earlier: Mapping[str, Tally] = field(default_factory=dict)  # site -> sum of earlier months
    excluded: frozenset[str] = frozenset()


def compose(feed: FeedInput | FeedCounts, *, threshold: int, previous: Mapping[str, Any] | None = None,
            targets: Sequence[Target] = (), earlier: Mapping[str, Tally] | None = None,
            excluded: frozenset[str] = frozenset()) -> Composed:  # fmt: skip
    """Revision 1 (``previous`` None): suppression with the audit of ``domain.disclosure``. Later
    revisions: ``domain.disclosure.revise`` against the previous revision's published cells, on the
    layout revision 1 fixed."""
    job = Job(feed, previous, targets, earlier or {}, excluded)
    return compose_many([job], threshold=threshold)[0]


def compose_many(jobs: Sequence[Job], *, threshold: int) -> list[Composed]:
    """``compose`` for several feeds; each gets exactly what ``compose`` gives it alone, but the
    revision-1 feeds are suppressed together (``suppress_many``) so that they share solver calls."""
    jobs = [_with_layout(_counted(j)) for j in jobs]
    tables = population_counts([cast(FeedCounts, j.feed) for j in jobs])  # _counted made them counts
    fresh = [n for n, j in enumerate(jobs) if j.previous is None]
    suppressed = iter(suppress_many([(t, frozenset()) for n in fresh for t in tables[n].values()], threshold))
    out = []
    for job, populations in zip(jobs, tables, strict=True):
        if job.previous is None:
            done = {name: next(suppressed) for name in populations}
        else:
            # Each population's revision needs only its own tables' cells (a cell of another
            # population can never be one of its cells: table names begin with the population).
            by_population: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
            for ts in (job.previous.get("populations") or job.previous.get("groups") or {}).values():
                for t in ts:
                    by_population[t["name"].partition(": ")[0]].append(t)
            done = {
                name: revise_published(t, threshold, by_population[name]) for name, t in populations.items()
            }
        composed = _finish(job, done, threshold)
        if job.previous is not None:
            composed = replace(composed, changes=_changes(job.previous, composed))
        out.append(composed)
    return out


def _changes(before: Mapping[str, Any], composed: Composed) -> list[dict[str, object]]:
    """``revision_changes(before, composed.body)``: where each population was revised by position
    (``SuppressedFeed.before``, the previous body's tables lined up with the layout's), the cells are
    compared as the two value lists, and only the figures of cells, sites and targets that differ are
    named (the body's tables are not made)."""
    old_tables = before.get("populations") or before.get("groups") or {}
    populations = composed.populations
    if old_tables.keys() != populations.keys() or any(p.before is None for p in populations.values()):
        return revision_changes(before, composed.body)
    b: dict[str, Any] = {}
    a: dict[str, Any] = {}
    for published in populations.values():
        for ref, x, y in published.changed():
            name = f"{ref.table}[{', '.join(ref.key)}]"
            b[name], a[name] = x, y
    _derived_changes(before, composed.head, b, a)
    return change_summary(b, a)


def _derived_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], b: dict[str, Any], a: dict[str, Any]
) -> None:
    """``_derived_figures`` of both bodies, less the units (the authority, a site, the targets) whose
    figures are all equal: a figure equal in both revisions is not a change."""
    old, new = before["indicators"], after["indicators"]
    _flatten_changed("indicator: ", old["authority"], new["authority"], b, a)
    old_sites, new_sites = old["sites"], new["sites"]
    for site in old_sites.keys() | new_sites.keys():
        x, y = old_sites.get(site), new_sites.get(site)
        if x is not None and y is not None:
            _flatten_changed(f"indicator {site}: ", x, y, b, a)
        elif x != y:
            if x is not None:
                _flatten(f"indicator {site}: ", x, b)
            if y is not None:
                _flatten(f"indicator {site}: ", y, a)
    if before["targets"] != after["targets"]:
        _target_figures(before, b)
        _target_figures(after, a)


def _counted(job: Job) -> Job:
    return job if isinstance(job.feed, FeedCounts) else replace(job, feed=count_feed(job.feed))


def _with_layout(job: Job) -> Job:
    """A later revision breaks down by the sites of revision 1 (its body's ``layout``)."""
    if job.previous is None:
        return job
    layout = tuple(job.previous.get("layout", job.previous["sites"]))
    return replace(job, feed=replace(job.feed, layout=layout))


def _table_json(feed: SuppressedFeed) -> list[dict[str, Any]]:
    # Cell keys stay tuples (JSON arrays all the same): a national month publishes millions of cells.
    return [{"name": name, "dims": list(dims), "cells": feed.rows(name)} for name, dims in feed.heads()]


def previous_cells(body: Mapping[str, Any]) -> dict[CellRef, int | None]:
    tables = body.get("populations") or body.get("groups") or {}
    return {
        CellRef(t["name"], tuple(key)): value
        for ts in tables.values()
        for t in ts
        for key, value, _ in t["cells"]
    }


def _finish(job: Job, populations: dict[str, SuppressedFeed], threshold: int) -> Composed:
    feed = job.feed
    published = _Published(populations)
    layout = layout_sites(feed)
    ind: dict[str, Any] = {  # in kept order (``kept_order``), as each indicator set
        "sites": {
            s: indicators(published, site_category(feed.authority, s, layout)) for s in kept_order(feed.sites)
        },
        "authority": indicators(published, TOTAL),
    }
    tallies = site_tallies(feed)
    evaluations = []
    by_scope: dict[str, list[Target]] = defaultdict(list)
    for t in job.targets:
        by_scope[t.scope].append(t)
    for scope in sorted(by_scope):
        sites = [scope] if len(scope) == 9 else [s for s in set(tallies) | set(job.earlier) if s[:6] == scope]
        results = sum((tallies.get(s, Tally()) + job.earlier.get(s, Tally()) for s in sites), Tally())
        evaluations.append(
            evaluate(scope, by_scope[scope], results, feed.month, threshold, excluded=scope in job.excluded)
        )
    body = {
        "authority": feed.authority,
        "month": str(feed.month),
        "threshold": threshold,
        "classification_version": CLASSIFICATION_VERSION,
        "sites": list(feed.sites),
        "layout": list(layout_sites(feed)),
        "populations": None,  # in its place in the body (``Composed.body``)
        "indicators": ind,
        "targets": evaluations,
    }
    return Composed(body, populations, {s: t.to_json() for s, t in tallies.items()})


def _flatten_changed(
    prefix: str, old: Mapping[str, Any], new: Mapping[str, Any], b: dict[str, Any], a: dict[str, Any]
) -> None:
    """``_flatten`` of both, less the figures equal in both (``change_summary`` names none of them): a
    later revision changes a few of an authority's ~50 indicators."""
    if old.keys() != new.keys():
        _flatten(prefix, old, b)
        _flatten(prefix, new, a)
        return
    for name, x in old.items():
        y = new[name]
        if x == y:
            continue
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            _flatten_changed(f"{prefix}{name}.", x, y, b, a)
            continue
        for value, out in ((x, b), (y, a)):
            if isinstance(value, Mapping):
                _flatten(f"{prefix}{name}.", value, out)
            else:
                out[f"{prefix}{name}"] = value


def _flatten(prefix: str, values: Mapping[str, Any], out: dict[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, Mapping):
            _flatten(f"{prefix}{name}.", value, out)
        else:
            out[f"{prefix}{name}"] = value


def figures(body: Mapping[str, Any]) -> dict[str, Any]:
    """Every published figure of a body by a stable name, for comparing revisions."""
    out: dict[str, Any] = {}
    for t in _body_tables(body):
        _cell_figures(t, range(len(t["cells"])), out)
    _derived_figures(body, out)
    return out


def _body_tables(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for tables in (body.get("populations") or body.get("groups") or {}).values() for t in tables]


def _cell_figures(table: Mapping[str, Any], which: Iterable[int], out: dict[str, Any]) -> None:
    name, cells = table["name"], table["cells"]
    for i in which:
        key, value, _ = cells[i]
        out[f"{name}[{', '.join(key)}]"] = value


def revision_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, object]]:
    """``change_summary(figures(before), figures(after))``, naming only the cells that differ: where
    both bodies have the same tables with the same keys in the same order (a feed's revisions: the
    layout is fixed at revision 1), a table's cells are compared by position and only those whose
    value changed become figures (a revision-2 body has ~600 cells, a handful changed)."""
    old_tables = before.get("populations") or before.get("groups") or {}
    new_tables = after.get("populations") or after.get("groups") or {}
    if old_tables.keys() != new_tables.keys():  # jsonb keeps an object's keys in its own order
        return change_summary(figures(before), figures(after))
    old = [t for name in old_tables for t in old_tables[name]]
    new = [t for name in old_tables for t in new_tables[name]]
    names = [t["name"] for t in old]
    if names != [t["name"] for t in new] or len(set(names)) != len(names):
        return change_summary(figures(before), figures(after))
    b: dict[str, Any] = {}
    a: dict[str, Any] = {}
    for t_old, t_new in zip(old, new, strict=True):
        c_old, c_new = t_old["cells"], t_new["cells"]
        keys = [tuple(c[0]) for c in c_old]
        if keys != [tuple(c[0]) for c in c_new] or len(set(keys)) != len(keys):
            _cell_figures(t_old, range(len(c_old)), b)
            _cell_figures(t_new, range(len(c_new)), a)
            continue
        differ = [i for i, (x, y) in enumerate(zip(c_old, c_new, strict=True)) if x[1] != y[1]]
        _cell_figures(t_old, differ, b)
        _cell_figures(t_new, differ, a)
    _derived_figures(before, b)
    _derived_figures(after, a)
    return change_summary(b, a)


def _derived_figures(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    _flatten("indicator: ", body["indicators"]["authority"], out)
    for site, values in body["indicators"]["sites"].items():
        _flatten(f"indicator {site}: ", values, out)
    _target_figures(body, out)


def _target_figures(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    for e in body["targets"]:
        for t in e.get("targets", ()):
            name = f"target {e.get('scope', e.get('site'))} FY{e['fiscal_year']}: {t.get('kind')}"
            out[name + (f"[{t['group']}]" if t.get("group") else "")] = t.get("result")
        out[f"target {e.get('scope', e.get('site'))} FY{e['fiscal_year']}: achievement"] = e.get(
            "achievement"
        )


# --- revisions --------------------------------------------------------------------------------------------

Published = Mapping[str, object]  # figure name -> published value (None = hidden)


def change_summary(before: Published, after: Published) -> list[dict[str, object]]:
    """What changed from one revision to the next, without ever showing a hidden value.

    A figure published in both revisions is shown old → new; a figure hidden in the new revision is
    reported as newly suppressed with no values; figures hidden in both are not mentioned (a hidden cell
    stays hidden in later revisions, so nothing becomes visible).
    """
    changes: list[dict[str, object]] = []  # each change's keys in kept order (``kept_order``)
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if new is None and old is None:
            continue
        if new is None:
            changes.append({"change": "suppressed", "figure": name})
        elif old is None and name in before:
            # Hidden before, published now: only a derived figure can do this (cells keep their
            # suppression); report without the old value.
            changes.append({"after": new, "change": "published", "figure": name})
        elif old is None:
            changes.append({"after": new, "change": "added", "figure": name})
        else:
            changes.append({"after": new, "before": old, "change": "changed", "figure": name})
    return changes
