"""A reproducible, realistic stream of submissions from authorities and Hello Work offices.

The stream is what a set of client systems around the joint sites (一体的実施施設) would send over a few
months: registrations on the common form, consents from its consent box, referrals (送り込み) by case
workers, placements and retention follow-ups. Proportions follow the programme's FY2015 report where it
gives them (about 40% of new job seekers sent by the authority, 1.9 sites per authority as 303 sites for
159 authorities, consent near the 86.5% of authorities already sharing data) and plausible guesses
elsewhere. A few placements arrive after the feed cutoff and a few people's events arrive out of order,
because consumers must cope with both.

Everything random comes from one ``random.Random(seed)`` consumed in a fixed order, so a config always
produces byte-identical output: ids, keys and instants included.
"""

from __future__ import annotations

import calendar as _stdcal
import heapq
import math
import random
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

from contracts.envelope import Family
from contracts.events import (
    CaptureChannel,
    CaptureSide,
    ConsentAction,
    ConsentScope,
    EmploymentType,
    PlacementRoute,
    Programme,
    RecipientKind,
    RetentionStatus,
)
from contracts.types import AttributeCategory, Sex
from domain.calendar import JST, age_band, age_on, month_bounds, parse_month
from domain.codes import CodeError, lg_check_digit, validate_local_government_code
from domain.occupation import CLASSIFICATION_VERSION
from producers.submission import Submission

__all__ = [
    "FEED_CUTOFF_DAY",
    "JST",
    "Authority",
    "SimulationConfig",
    "Site",
    "build_authorities",
    "read_jsonl",
    "simulate",
    "summarize",
    "write_jsonl",
]

T = TypeVar("T")

FORM_VERSION = "common-form-2016.1"
# Mirrors infra.config.Settings.feed_cutoff_day's default; importing Settings would read the environment.
FEED_CUTOFF_DAY = 5


@dataclass(frozen=True)
class SimulationConfig:
    authorities: int = 3
    months: int = 3
    seed: int = 1
    start_month: str = "2025-04"
    registrations_per_site_month: int = 50
    profile: str = "default"  # see PROFILES; "fy2015" fixes the authorities and sites itself

    @classmethod
    def fy2015(cls, seed: int = 2015, months: int = 16) -> SimulationConfig:
        """The FY2015 programme (平成27年度, April 2015 – March 2016) with four months before it, so that
        April's placements include people registered earlier, as in a programme running since 2011."""
        return cls(authorities=FY2015_AUTHORITIES, months=months, seed=seed, start_month="2014-12",
                   registrations_per_site_month=FY2015_PER_SITE_MONTH, profile="fy2015")  # fmt: skip

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {self.profile!r}")
        if self.profile == "fy2015" and self.authorities != FY2015_AUTHORITIES:
            raise ValueError(f"profile fy2015 has {FY2015_AUTHORITIES} authorities, got {self.authorities}")
        if self.authorities < 1:
            raise ValueError(f"authorities must be at least 1, got {self.authorities}")
        if self.months < 1:
            raise ValueError(f"months must be at least 1, got {self.months}")
        if self.authorities > 1000:
            # Synthesised codes come from 47 prefectures x 39 city numbers; stay well clear of running out.
            raise ValueError(f"authorities must be at most 1000, got {self.authorities}")
        if self.registrations_per_site_month < 0:
            raise ValueError(
                f"registrations_per_site_month must be >= 0, got {self.registrations_per_site_month}"
            )
        parse_month(self.start_month)


@dataclass(frozen=True)
class Site:
    site_id: str
    office: str
    shares_data: bool = True  # the labour bureau and the authority signed the data agreement (協定)
    opens: date | None = None  # a site new this year starts on this date (left out of the evaluation)


@dataclass(frozen=True)
class Authority:
    code: str
    prefecture: str
    name: str
    sites: tuple[Site, ...] = field(default=())

    @property
    def source(self) -> str:
        return f"/authorities/{self.code}"


# --- reference data ----------------------------------------------------------------------------

PREFECTURES = (
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県", "茨城県", "栃木県", "群馬県",
    "埼玉県", "千葉県", "東京都", "神奈川県", "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県",
    "岐阜県", "静岡県", "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県", "奈良県", "和歌山県",
    "鳥取県", "島根県", "岡山県", "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県",
    "佐賀県", "長崎県", "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
)  # fmt: skip

# Real municipalities (JIS X 0402 with check digit). The first five are the DOMAIN.md examples, so a
# small simulation uses familiar places.
_KNOWN_AUTHORITIES = (
    ("131041", "新宿区"), ("112038", "川口市"), ("332089", "総社市"), ("092011", "宇都宮市"),
    ("141003", "横浜市"), ("011002", "札幌市"), ("271004", "大阪市"), ("401307", "福岡市"),
    ("041009", "仙台市"), ("131016", "千代田区"), ("131113", "大田区"), ("131202", "練馬区"),
    ("131211", "足立区"), ("131237", "江戸川区"), ("111007", "さいたま市"), ("121002", "千葉市"),
    ("141305", "川崎市"), ("151009", "新潟市"), ("221007", "静岡市"), ("221309", "浜松市"),
    ("231002", "名古屋市"), ("261009", "京都市"), ("271403", "堺市"), ("281000", "神戸市"),
    ("331007", "岡山市"), ("341002", "広島市"), ("401005", "北九州市"), ("431001", "熊本市"),
    ("472018", "那覇市"), ("012025", "函館市"), ("022012", "青森市"), ("032018", "盛岡市"),
    ("052019", "秋田市"), ("072036", "郡山市"), ("102016", "前橋市"), ("172014", "金沢市"),
    ("202011", "長野市"), ("252018", "大津市"), ("352039", "山口市"), ("372013", "高松市"),
    ("382019", "松山市"), ("462012", "鹿児島市"), ("272035", "豊中市"), ("122041", "船橋市"),
)  # fmt: skip


def _valid_known() -> tuple[tuple[str, str], ...]:
    kept = []
    for code, name in _KNOWN_AUTHORITIES:
        try:
            validate_local_government_code(code)
        except CodeError:
            continue
        kept.append((code, name))
    return tuple(kept)


KNOWN_AUTHORITIES = _valid_known()

_CITY_HEADS = ("東", "西", "南", "北", "中", "新", "大", "小", "高", "本", "松", "桜", "緑", "若", "富士")
_CITY_TAILS = ("川", "山", "田", "野", "原", "沢", "宮", "浜", "岡", "津", "崎", "島", "里")
_TOWNS = ("本町", "栄町", "中央", "緑町", "旭町", "幸町", "新町", "駅前", "桜ケ丘", "若葉", "元町", "東町")

# (kanji, kana, romaji). 髙 and 𠮷 are in on purpose: CP932 cannot hold them, and real registers have them.
_FAMILY_NAMES = (
    ("佐藤", "サトウ", "sato"), ("鈴木", "スズキ", "suzuki"), ("高橋", "タカハシ", "takahashi"),
    ("髙橋", "タカハシ", "takahashi"), ("田中", "タナカ", "tanaka"), ("伊藤", "イトウ", "ito"),
    ("渡辺", "ワタナベ", "watanabe"), ("山本", "ヤマモト", "yamamoto"), ("中村", "ナカムラ", "nakamura"),
    ("小林", "コバヤシ", "kobayashi"), ("加藤", "カトウ", "kato"), ("吉田", "ヨシダ", "yoshida"),
    ("𠮷田", "ヨシダ", "yoshida"), ("山田", "ヤマダ", "yamada"), ("佐々木", "ササキ", "sasaki"),
    ("山口", "ヤマグチ", "yamaguchi"), ("松本", "マツモト", "matsumoto"), ("井上", "イノウエ", "inoue"),
    ("木村", "キムラ", "kimura"), ("林", "ハヤシ", "hayashi"), ("斎藤", "サイトウ", "saito"),
    ("清水", "シミズ", "shimizu"), ("山崎", "ヤマザキ", "yamazaki"), ("森", "モリ", "mori"),
    ("池田", "イケダ", "ikeda"), ("橋本", "ハシモト", "hashimoto"), ("阿部", "アベ", "abe"),
    ("石川", "イシカワ", "ishikawa"), ("山下", "ヤマシタ", "yamashita"), ("中島", "ナカジマ", "nakajima"),
    ("石井", "イシイ", "ishii"), ("小川", "オガワ", "ogawa"), ("前田", "マエダ", "maeda"),
    ("岡田", "オカダ", "okada"), ("長谷川", "ハセガワ", "hasegawa"), ("藤田", "フジタ", "fujita"),
    ("後藤", "ゴトウ", "goto"), ("近藤", "コンドウ", "kondo"), ("村上", "ムラカミ", "murakami"),
    ("遠藤", "エンドウ", "endo"), ("青木", "アオキ", "aoki"), ("坂本", "サカモト", "sakamoto"),
    ("髙木", "タカギ", "takagi"), ("𠮷川", "ヨシカワ", "yoshikawa"), ("渡邉", "ワタナベ", "watanabe"),
    ("齋藤", "サイトウ", "saito"),
)  # fmt: skip
_MALE_NAMES = (
    ("翔太", "ショウタ", "shota"), ("大輔", "ダイスケ", "daisuke"), ("健太", "ケンタ", "kenta"),
    ("拓也", "タクヤ", "takuya"), ("直樹", "ナオキ", "naoki"), ("和也", "カズヤ", "kazuya"),
    ("誠", "マコト", "makoto"), ("浩二", "コウジ", "koji"), ("隆", "タカシ", "takashi"),
    ("博之", "ヒロユキ", "hiroyuki"), ("悠斗", "ユウト", "yuto"), ("蓮", "レン", "ren"),
    ("大翔", "ヒロト", "hiroto"), ("一郎", "イチロウ", "ichiro"), ("修", "オサム", "osamu"),
    ("剛", "ツヨシ", "tsuyoshi"),
)  # fmt: skip
_FEMALE_NAMES = (
    ("陽子", "ヨウコ", "yoko"), ("美咲", "ミサキ", "misaki"), ("恵子", "ケイコ", "keiko"),
    ("由美", "ユミ", "yumi"), ("真由美", "マユミ", "mayumi"), ("愛", "アイ", "ai"), ("彩", "アヤ", "aya"),
    ("優子", "ユウコ", "yuko"), ("明美", "アケミ", "akemi"), ("裕子", "ユウコ", "yuko"),
    ("結衣", "ユイ", "yui"), ("陽菜", "ヒナ", "hina"), ("さくら", "サクラ", "sakura"),
    ("智子", "トモコ", "tomoko"), ("久美子", "クミコ", "kumiko"), ("千尋", "チヒロ", "chihiro"),
)  # fmt: skip
_EMAIL_DOMAINS = ("example.jp", "example.com", "example.org")

_EMPLOYER_STEMS = (
    "東和", "大和", "日本", "中央", "さくら", "みどり", "北辰", "丸栄", "三和", "平和", "第一", "太陽",
    "協和", "富士", "あおば", "ひまわり", "光", "昭栄", "新星", "明和",
)  # fmt: skip
_GENERIC_TRADES = ("商事", "サービス", "産業", "興業", "企画")
# Employer trades per occupation group so a care worker is not placed at a steel works.
_TRADES_BY_GROUP: dict[str, tuple[str, ...]] = {
    "04": ("メディカル", "ヘルスケア"),
    "05": ("保育サービス", "キッズ"),
    "06": ("商事", "ビジネスサポート", "事務センター"),
    "07": ("商事", "販売", "リテール"),
    "08": ("ケアサービス", "介護サービス", "ライフケア"),
    "09": ("フーズ", "ホテル", "サービス"),
    "10": ("警備保障", "セキュリティ"),
    "11": ("農園", "水産"),
    "12": ("製作所", "工業", "食品", "精機"),
    "13": ("運輸", "交通", "ロジスティクス"),
    "14": ("建設", "工務店", "電設"),
    "15": ("物流", "ビルメンテナンス", "クリーンサービス"),
}

_ATTRIBUTES = tuple(AttributeCategory)
# Public assistance largest, then needy-person support, child-rearing allowance, youth, parenting,
# disability, housing benefit, general (the brief's ordering of the programme's target groups).
_ATTRIBUTE_WEIGHTS = {
    AttributeCategory.PUBLIC_ASSISTANCE: 30,
    AttributeCategory.NEEDY_PERSON_SUPPORT: 20,
    AttributeCategory.CHILD_REARING_ALLOWANCE: 13,
    AttributeCategory.YOUTH: 11,
    AttributeCategory.PARENTING: 9,
    AttributeCategory.DISABILITY: 6,
    AttributeCategory.HOUSING_BENEFIT: 4,
    AttributeCategory.GENERAL: 7,
}
# Second categories that actually co-occur; "general" means none of the others, so it stands alone.
_SECOND_ATTRIBUTE: dict[str, tuple[AttributeCategory, ...]] = {
    AttributeCategory.PUBLIC_ASSISTANCE: (
        AttributeCategory.DISABILITY,
        AttributeCategory.PARENTING,
        AttributeCategory.CHILD_REARING_ALLOWANCE,
    ),
    AttributeCategory.NEEDY_PERSON_SUPPORT: (AttributeCategory.HOUSING_BENEFIT, AttributeCategory.YOUTH),
    AttributeCategory.CHILD_REARING_ALLOWANCE: (AttributeCategory.PARENTING,),
    AttributeCategory.YOUTH: (AttributeCategory.NEEDY_PERSON_SUPPORT, AttributeCategory.DISABILITY),
    AttributeCategory.PARENTING: (AttributeCategory.CHILD_REARING_ALLOWANCE,),
    AttributeCategory.DISABILITY: (AttributeCategory.PUBLIC_ASSISTANCE,),
    AttributeCategory.HOUSING_BENEFIT: (AttributeCategory.NEEDY_PERSON_SUPPORT,),
    AttributeCategory.GENERAL: (),
}
# Per-group rates weighted by the mix above come to ~0.40 for referral and ~0.40 for placement.
_REFERRAL_RATE: dict[str, float] = {
    AttributeCategory.PUBLIC_ASSISTANCE: 0.55,
    AttributeCategory.NEEDY_PERSON_SUPPORT: 0.50,
    AttributeCategory.CHILD_REARING_ALLOWANCE: 0.35,
    AttributeCategory.YOUTH: 0.25,
    AttributeCategory.PARENTING: 0.20,
    AttributeCategory.DISABILITY: 0.35,
    AttributeCategory.HOUSING_BENEFIT: 0.45,
    AttributeCategory.GENERAL: 0.15,
}
_PLACEMENT_RATE: dict[str, float] = {
    AttributeCategory.PUBLIC_ASSISTANCE: 0.33,
    AttributeCategory.NEEDY_PERSON_SUPPORT: 0.38,
    AttributeCategory.CHILD_REARING_ALLOWANCE: 0.45,
    AttributeCategory.YOUTH: 0.48,
    AttributeCategory.PARENTING: 0.42,
    AttributeCategory.DISABILITY: 0.35,
    AttributeCategory.HOUSING_BENEFIT: 0.42,
    AttributeCategory.GENERAL: 0.50,
}
_PROGRAMME: dict[str, Programme] = {
    AttributeCategory.PUBLIC_ASSISTANCE: Programme.PUBLIC_ASSISTANCE_EMPLOYMENT,
    AttributeCategory.NEEDY_PERSON_SUPPORT: Programme.NEEDY_PERSON_SUPPORT,
    AttributeCategory.HOUSING_BENEFIT: Programme.NEEDY_PERSON_SUPPORT,
    AttributeCategory.CHILD_REARING_ALLOWANCE: Programme.CHILD_REARING_SUPPORT,
    AttributeCategory.PARENTING: Programme.CHILD_REARING_SUPPORT,
    AttributeCategory.YOUTH: Programme.YOUTH_SUPPORT,
    AttributeCategory.DISABILITY: Programme.DISABILITY_SUPPORT,
    AttributeCategory.GENERAL: Programme.GENERAL,
}
_CASE_PREFIX: dict[str, str] = {
    Programme.PUBLIC_ASSISTANCE_EMPLOYMENT: "SH",
    Programme.NEEDY_PERSON_SUPPORT: "KK",
    Programme.CHILD_REARING_SUPPORT: "HH",
    Programme.YOUTH_SUPPORT: "WK",
    Programme.DISABILITY_SUPPORT: "SG",
    Programme.GENERAL: "IP",
}

_OCCUPATION_GROUPS = tuple(f"{g:02d}" for g in range(1, 16))
_OCCUPATION_WEIGHTS = (0.5, 1.5, 1.5, 3, 3, 22, 7, 12, 15, 3, 1.5, 11, 4, 2.5, 13.5)
_EMPLOYMENT_TYPES = (
    EmploymentType.REGULAR_FULL_TIME,
    EmploymentType.NON_REGULAR_FULL_TIME,
    EmploymentType.PART_TIME,
    EmploymentType.TEMPORARY,
)
_EMPLOYMENT_WEIGHTS = (25, 30, 40, 5)

# Behavioural rates.
P_TEAM_SUPPORT = 0.10
P_SECOND_ATTRIBUTE = 0.25
P_CONSENT = 0.87
P_DISCLOSE_PLACEMENT = 0.90
P_RETENTION_SUPPORT = 0.80
P_CONSENT_WITHDRAWN = 0.02
P_CONSENT_CHANGED = 0.03
P_SELF_FOUND = 0.25
P_DESIRED_OCCUPATION = 0.70
P_LEFT_BY_SIX_MONTHS = 0.15
P_LATE_PLACEMENT = 0.03
P_OUT_OF_ORDER = 0.02
P_EMAIL = 0.60
MAX_REFERRAL_LEAD_DAYS = 14
MAX_PLACEMENT_LAG_DAYS = 122  # four months


@dataclass(frozen=True)
class Profile:
    """The proportions a stream is drawn with. Rates the report gives are marked with its line
    (``shared/seed/000_710836a85c6b4b72.txt``); the rest are plausible guesses, said so."""

    attribute_weights: dict[str, float]
    referral_rate: dict[str, float]
    placement_rate: dict[str, float]
    p_team_support: float = P_TEAM_SUPPORT
    p_team_support_later: float = (
        0.0  # enrolled later by the case conference (a referral's team_support_from)
    )
    p_self_found: float = P_SELF_FOUND
    p_consent: float = P_CONSENT
    p_prior_application: float = 0.0  # had already applied at another Hello Work office (~l.529–531)
    p_foreign: float = 0.0  # 外国人 (~l.983)


DEFAULT_PROFILE = Profile(
    attribute_weights={str(k): float(v) for k, v in _ATTRIBUTE_WEIGHTS.items()},
    referral_rate={str(k): v for k, v in _REFERRAL_RATE.items()},
    placement_rate={str(k): v for k, v in _PLACEMENT_RATE.items()},
)

# FY2015 (平成27年度): 159 authorities (33 prefectures, 126 municipalities, ~l.731, 820), 303 sites
# (~l.4, 838), 78,869 placements through a Hello Work referral of which 17,569 (22.3%) 生活保護受給者等
# (~l.9–10); the programme's 就職率 fell in FY2015 (~l.102) and the chart gives 36.7% / 38.7% / 43.9%
# (~l.107): 36.7% is taken as FY2015's. So new job seekers ~ 78,869 / 0.367 ~ 215,000 a year, ~59 per
# site and month. Welfare recipients place less often than the others (a guess); weights and rates
# below were tuned so the stream gives the report's shares (test_fy2015_profile_has_the_reports_proportions).
FY2015_AUTHORITIES = 159
FY2015_PREFECTURES = 33
FY2015_SITES = 303
FY2015_PER_SITE_MONTH = 63
FY2015_SITES_SHARING = 0.879  # 261 of 297 sites share job seekers' data (~l.568)
FY2015_PROFILE = Profile(
    attribute_weights={
        AttributeCategory.PUBLIC_ASSISTANCE: 10.5,
        AttributeCategory.NEEDY_PERSON_SUPPORT: 4.5,
        AttributeCategory.CHILD_REARING_ALLOWANCE: 3.0,
        AttributeCategory.HOUSING_BENEFIT: 1.2,
        AttributeCategory.YOUTH: 20.0,
        AttributeCategory.PARENTING: 11.0,
        AttributeCategory.DISABILITY: 4.5,
        AttributeCategory.GENERAL: 45.3,
    },
    referral_rate={
        AttributeCategory.PUBLIC_ASSISTANCE: 0.70,
        AttributeCategory.NEEDY_PERSON_SUPPORT: 0.60,
        AttributeCategory.CHILD_REARING_ALLOWANCE: 0.45,
        AttributeCategory.HOUSING_BENEFIT: 0.55,
        AttributeCategory.YOUTH: 0.35,
        AttributeCategory.PARENTING: 0.35,
        AttributeCategory.DISABILITY: 0.45,
        AttributeCategory.GENERAL: 0.25,
    },
    placement_rate={
        AttributeCategory.PUBLIC_ASSISTANCE: 0.39,
        AttributeCategory.NEEDY_PERSON_SUPPORT: 0.41,
        AttributeCategory.CHILD_REARING_ALLOWANCE: 0.45,
        AttributeCategory.HOUSING_BENEFIT: 0.43,
        AttributeCategory.YOUTH: 0.50,
        AttributeCategory.PARENTING: 0.48,
        AttributeCategory.DISABILITY: 0.43,
        AttributeCategory.GENERAL: 0.50,
    },
    p_team_support=0.05,
    p_team_support_later=0.04,
    p_self_found=0.25,
    p_consent=0.90,  # per person at a site that shares data: a guess (the report counts sites, not people)
    p_prior_application=0.03,
    p_foreign=0.01,
)
PROFILES = {"default": DEFAULT_PROFILE, "fy2015": FY2015_PROFILE}


# --- helpers -----------------------------------------------------------------------------------


class _Weighted:
    """Weighted choice by bisecting cumulative weights: several times faster than ``Random.choices``."""

    __slots__ = ("cum", "items", "total")

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = tuple(items)
        self.cum = tuple(accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect(self.cum, rng.random() * self.total)]


# Plain strings from here on: StrEnum members hash and compare as their values, so the tables above
# still answer, and the hot path skips Enum's Python-level ``.value`` descriptor.
_EMPLOYMENT_VALUES = tuple(e.value for e in _EMPLOYMENT_TYPES)
_MALE, _FEMALE, _NOT_STATED = Sex.MALE.value, Sex.FEMALE.value, Sex.NOT_STATED.value
_SHARE = ConsentScope.SHARE_REGISTRATION.value
_DISCLOSE = ConsentScope.DISCLOSE_PLACEMENT.value
_RETAIN = ConsentScope.RETENTION_SUPPORT.value
_KIND_AUTHORITY, _KIND_OFFICE = RecipientKind.AUTHORITY.value, RecipientKind.OFFICE.value
_MOTHERS = frozenset({AttributeCategory.CHILD_REARING_ALLOWANCE.value, AttributeCategory.PARENTING.value})
_OCCUPATION_PICK = _Weighted(_OCCUPATION_GROUPS, _OCCUPATION_WEIGHTS)
_EMPLOYMENT_PICK = _Weighted(_EMPLOYMENT_VALUES, _EMPLOYMENT_WEIGHTS)
_SITE_COUNT_PICK = _Weighted((1, 2, 3), (35, 40, 25))  # mean 1.9, as 303 sites / 159 authorities

_DAY = 86_400
_ORIGIN = datetime(1, 1, 1, tzinfo=JST)


def _randint(rng: random.Random, a: int, b: int) -> int:
    # Random.randint goes through randrange's argument checks; this is the hot path, a few x faster.
    return a + int(rng.random() * (b - a + 1))


def _choice(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def _hex128(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _secs(d: date, seconds_into_day: int) -> int:
    """JST wall-clock seconds since 0001-01-01: a cheap integer sort key for emission instants."""
    return (d.toordinal() - 1) * _DAY + seconds_into_day


def _instant(secs: int) -> datetime:
    return _ORIGIN + timedelta(seconds=secs)


def _office_hours(rng: random.Random) -> int:
    # 08:30–17:15, the counters' opening hours.
    return 30_600 + int(rng.random() * 31_500)


_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    days = _MONTH_DAYS[month] + (month == 2 and _stdcal.isleap(year))
    return date(year, month, min(d.day, days))


def _cutoff_for(d: date) -> date:
    """The placement feed for d's month closes on the cutoff day of the following month."""
    first_next = _add_months(d.replace(day=1), 1)
    return first_next.replace(day=FEED_CUTOFF_DAY)


def _poissonish(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 30:
        # Knuth: exact, and cheap enough for small means.
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def build_authorities(config: SimulationConfig) -> list[Authority]:
    """The authorities and their joint sites for a config (uses its own RNG stream, seeded from config)."""
    if config.profile == "fy2015":
        return _fy2015_authorities(config)
    rng = random.Random(f"authorities:{config.seed}")
    picked: list[tuple[str, str, str]] = [
        (code, PREFECTURES[int(code[:2]) - 1], name) for code, name in KNOWN_AUTHORITIES[: config.authorities]
    ]
    used = {code for code, _, _ in picked}
    while len(picked) < config.authorities:
        pref = _randint(rng, 1, 47)
        first_five = f"{pref:02d}{_randint(rng, 201, 239):03d}"
        code = first_five + str(lg_check_digit(first_five))
        if code in used:
            continue
        used.add(code)
        name = _choice(rng, _CITY_HEADS) + _choice(rng, _CITY_TAILS) + "市"
        picked.append((code, PREFECTURES[pref - 1], name))
    result = []
    for code, pref_name, name in picked:
        n_sites = _SITE_COUNT_PICK.pick(rng)
        office_numbers = rng.sample(range(1, 41), n_sites)
        sites = tuple(
            Site(site_id=f"{code}-{i:02d}", office=f"{code[:2]}{num:02d}")
            for i, num in enumerate(office_numbers, start=1)
        )
        result.append(Authority(code=code, prefecture=pref_name, name=name, sites=sites))
    return result


# The 33 prefectures running joint sites in FY2015 (~l.777–788).
FY2015_PREFECTURE_CODES = (
    "01", "02", "03", "06", "12", "14", "15", "16", "17", "19", "20", "21", "22", "23", "25", "26", "27",
    "28", "29", "30", "31", "32", "34", "36", "37", "38", "39", "40", "42", "43", "44", "45", "47",
)  # fmt: skip
KUMAMOTO = (
    "430005",
    "431001",
)  # left out of FY2015's evaluation (~l.12–13): their sites' results too (~l.108)
FY2015_NEW_AUTHORITIES = 3  # started at the end of the year (~l.12)
FY2015_NEW_SITES = 24  # further sites opened during the year: 303 − 273 evaluated − 6 above (~l.15, 66)


def _fy2015_authorities(config: SimulationConfig) -> list[Authority]:
    """159 authorities (33 prefectures, 126 municipalities) with 303 sites, 88% of them sharing data;
    3 authorities start in February (new), 24 more sites open during the year."""
    rng = random.Random(f"authorities:fy2015:{config.seed}")
    picked = [(f"{p}000" + str(lg_check_digit(f"{p}000")), PREFECTURES[int(p) - 1], PREFECTURES[int(p) - 1])
              for p in FY2015_PREFECTURE_CODES]  # fmt: skip
    used = {code for code, _, _ in picked}
    for code, name in KNOWN_AUTHORITIES:
        if len(picked) < FY2015_AUTHORITIES and code not in used:
            picked.append((code, PREFECTURES[int(code[:2]) - 1], name))
            used.add(code)
    while len(picked) < FY2015_AUTHORITIES:
        pref = _randint(rng, 1, 47)
        first_five = f"{pref:02d}{_randint(rng, 201, 239):03d}"
        code = first_five + str(lg_check_digit(first_five))
        if code not in used:
            used.add(code)
            picked.append(
                (code, PREFECTURES[pref - 1], _choice(rng, _CITY_HEADS) + _choice(rng, _CITY_TAILS) + "市")
            )
    counts = {code: (2 if code == KUMAMOTO[0] else 1 if code == KUMAMOTO[1] else 1 + _randint(rng, 1, 3) * (code[2:5] == "000"))
              for code, _, _ in picked}  # fmt: skip
    municipalities = [c for c, _, _ in picked if c[2:5] != "000" and c not in KUMAMOTO]
    while sum(counts.values()) < FY2015_SITES:
        c = _choice(rng, municipalities)
        if counts[c] < 4:
            counts[c] += 1
    new_authorities = set(rng.sample([c for c in municipalities if counts[c] == 1], FY2015_NEW_AUTHORITIES))
    later_sites = [(c, i) for c, _, _ in picked if c not in KUMAMOTO for i in range(2, counts[c] + 1)]
    new_sites = set(rng.sample(later_sites, FY2015_NEW_SITES))
    result = []
    for code, pref_name, name in picked:
        office_numbers = rng.sample(range(1, 41), counts[code])
        sites = []
        for i, num in enumerate(office_numbers, start=1):
            opens = None
            if code in new_authorities:
                opens = date(2016, 2, 1)
            elif (code, i) in new_sites:
                opens = date(2015, _randint(rng, 7, 12), 1)
            sites.append(
                Site(f"{code}-{i:02d}", f"{code[:2]}{num:02d}", rng.random() < FY2015_SITES_SHARING, opens)
            )
        result.append(Authority(code=code, prefecture=pref_name, name=name, sites=tuple(sites)))
    return result


def _between(rng: random.Random, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


def fy2015_evaluation(config: SimulationConfig) -> tuple[list[tuple[str, int, str, float]], list[str]]:
    """The yearly targets the steering councils set for FY2015 (scope, fiscal year, kind, value) and the
    sites and authorities left out of the evaluation (new that year, and Kumamoto's, ~l.12–15, 108).

    A council sets a target from what the site did the year before: its expected volume times a factor
    (a site-wide one and one per target: councils that aim high aim high on every target). The
    factors were tuned so the year-end classes come out near the report's 50.5% / 35.2% / 14.3% of
    sites and 139 of 154 authorities (~l.12–15, 66–77).
    """
    gen = _Generator(config)
    rng = random.Random(f"targets:fy2015:{config.seed}")
    prof = gen.profile
    total_w = sum(prof.attribute_weights.values())
    place = sum(w * prof.placement_rate[a] for a, w in prof.attribute_weights.items()) / total_w
    refer = sum(w * prof.referral_rate[a] for a, w in prof.attribute_weights.items()) / total_w
    per_month = config.registrations_per_site_month * place * (1 - prof.p_self_found)
    targets: list[tuple[str, int, str, float]] = []
    excluded: list[str] = []
    for a in gen.authorities:
        if a.code in KUMAMOTO or all(s.opens is not None for s in a.sites):
            excluded.append(a.code)
        planned_total = 0.0
        for site in a.sites:
            if site.opens is not None or a.code in KUMAMOTO:
                excluded.append(site.site_id)
                continue
            planned = 12 * per_month * gen.site_factor[site.site_id]
            planned_total += planned
            council = 0.92 + 0.16 * rng.random()  # how high this council aims, on every target
            targets.append(
                (
                    site.site_id,
                    2015,
                    "referral_placements",
                    round(planned * council * _between(rng, 0.82, 1.08)),
                )
            )
            if rng.random() < 0.9:  # a few sites have a single target (~l.79)
                share = refer * council * _between(rng, 0.82, 1.08)
                targets.append((site.site_id, 2015, "referral_share", round(share, 3)))
        if a.code not in excluded and planned_total:
            council = 0.92 + 0.16 * rng.random()
            targets.append(
                (
                    a.code,
                    2015,
                    "referral_placements",
                    round(planned_total * council * _between(rng, 0.80, 1.08)),
                )
            )
            targets.append(
                (a.code, 2015, "referral_share", round(refer * council * _between(rng, 0.80, 1.08), 3))
            )
    return targets, excluded


# --- generation --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """An event with its emission instant, and the events held back to go out right after it."""

    secs: int
    family: Family
    source: str
    data: dict[str, Any]
    event_id: str
    held: tuple[_Pending, ...] = ()


class _Generator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.authorities = build_authorities(config)
        start = parse_month(config.start_month)
        self.months = [
            month_bounds(
                f"{start.year + (start.month - 1 + i) // 12:04d}-{(start.month - 1 + i) % 12 + 1:02d}"
            )
            for i in range(config.months)
        ]
        self.profile = PROFILES[config.profile]
        self.attribute_pick = _Weighted(
            [str(a) for a in self.profile.attribute_weights], list(self.profile.attribute_weights.values())
        )
        self.horizon_start = self.months[0][0]
        self.horizon_end = self.months[-1][1]
        self.job_seeker_serial: dict[str, int] = {}
        self.case_serial: dict[str, int] = {}
        self.site_factor = {
            site.site_id: 0.7 + 0.6 * self.rng.random() for a in self.authorities for site in a.sites
        }

    # Each person's whole history is generated at once; the caller merges histories by emission time.
    def person(self, authority: Authority, site: Site, registered_on: date) -> list[_Pending]:
        rng = self.rng
        office_source = f"/hellowork/offices/{site.office}"
        person_key = _hex128(rng)
        prof = self.profile
        primary: str = self.attribute_pick.pick(rng)
        attributes = [primary]
        seconds = _SECOND_ATTRIBUTE[primary]
        if seconds and rng.random() < P_SECOND_ATTRIBUTE:
            attributes.append(seconds[int(rng.random() * len(seconds))].value)
        sex = self._sex(primary)
        birth = self._birth(primary, registered_on)
        desired = _OCCUPATION_PICK.pick(rng)
        events: list[_Pending] = []

        reg_secs = _secs(registered_on, _office_hours(rng))

        referral: _Pending | None = None
        if rng.random() < prof.referral_rate[primary]:
            # Clamped so the referral's business date stays inside the simulated months.
            lead = min(MAX_REFERRAL_LEAD_DAYS, (registered_on - self.horizon_start).days)
            referred_on = registered_on - timedelta(days=_randint(rng, 0, lead))
            ref_secs = _secs(referred_on, _office_hours(rng))
            if ref_secs > reg_secs:
                ref_secs = reg_secs - 60
            programme = _PROGRAMME[primary].value
            referral = _Pending(
                secs=ref_secs + 60 * _randint(rng, 1, 240),
                family=Family.REFERRAL,
                source=authority.source,
                event_id=_hex128(rng),
                data={
                    "referral_id": _hex128(rng),
                    "person_key": person_key,
                    "authority": authority.code,
                    "site": site.site_id,
                    "programme": programme,
                    "referred_on": referred_on.isoformat(),
                    "personal": {"case_number": self._case_number(authority.code, programme, referred_on)},
                },
            )
            # The case worker's system may batch, but never sends a referral after the registration it led to.
            referral.secs = min(referral.secs, reg_secs)
            events.append(referral)

        registration = _Pending(
            secs=reg_secs + 60 * _randint(rng, 1, 90),
            family=Family.REGISTRATION,
            source=office_source,
            event_id=_hex128(rng),
            data={
                "person_key": person_key,
                "registered_on": registered_on.isoformat(),
                "office": site.office,
                "site": site.site_id,
                "authority": authority.code,
                "sex": sex,
                "age_band": age_band(age_on(birth, registered_on)).value,
                "attributes": attributes,
                "desired_occupation": {"group": desired, "classification_version": CLASSIFICATION_VERSION},
                "team_support": rng.random() < prof.p_team_support,
                "personal": self._registration_personal(authority, site, sex, birth),
            },
        )
        events.append(registration)
        # Profiles without these rates draw nothing for them, so their streams stay as they were.
        foreign = bool(prof.p_foreign) and rng.random() < prof.p_foreign
        if foreign:
            registration.data["foreign_national"] = True
        if prof.p_prior_application and rng.random() < prof.p_prior_application:
            # Applied at another office of the prefecture first; shared with the site under consent.
            registration.data["prior_application_office"] = (
                f"{site.office[:2]}{(int(site.office[2:]) % 40) + 41:02d}"
            )
        if (
            referral is not None
            and prof.p_team_support_later
            and not registration.data["team_support"]
            and rng.random() < prof.p_team_support_later
        ):
            # The case conference enrols the person in team support weeks after registering.
            enrolled = registered_on + timedelta(days=_randint(rng, 14, 60))
            if enrolled <= self.horizon_end:
                later = _Pending(
                    secs=max(_secs(enrolled, _office_hours(rng)), registration.secs + 60),
                    family=Family.REFERRAL,
                    source=authority.source,
                    event_id=_hex128(rng),
                    data=dict(
                        referral.data,
                        referral_id=_hex128(rng),
                        referred_on=enrolled.isoformat(),
                        team_support_from=enrolled.isoformat(),
                    ),
                )
                events.append(later)

        consents: list[_Pending] = []
        # (effective date, scopes) so later events can ask what was consented to on a given day.
        consent_timeline: list[tuple[date, frozenset[str]]] = []
        # No consent is asked where the site shares no data (no agreement, ~l.567–570).
        if site.shares_data and rng.random() < prof.p_consent:
            consents = self._consents(authority, site, person_key, registered_on, reg_secs, consent_timeline)
            # Whichever side keyed the consent box, it reaches the hub after the form's registration.
            consents[0].secs = max(consents[0].secs, registration.secs + 60)
            events.extend(consents)

        placement: _Pending | None = None
        if rng.random() < prof.placement_rate[primary]:
            placement = self._placement(
                site, person_key, registered_on, sex, birth, attributes, desired, events
            )
            if placement is not None and foreign:
                placement.data["foreign_national"] = True
            if placement is not None:
                self._retention(authority, site, placement, consent_timeline, events)

        if rng.random() < P_OUT_OF_ORDER:
            self._disorder(events, referral, registration, consents, placement)
        return events

    def _sex(self, primary: str) -> str:
        r = self.rng.random()
        if r < 0.01:
            return _NOT_STATED
        # Child-rearing allowance goes overwhelmingly to single mothers.
        female_share = 0.92 if primary in _MOTHERS else 0.45
        return _FEMALE if r < 0.01 + 0.99 * female_share else _MALE

    def _birth(self, primary: str, on: date) -> date:
        rng = self.rng
        if primary == AttributeCategory.YOUTH:
            age = 16 + rng.random() * 19
        elif primary in _MOTHERS:
            age = 22 + rng.random() * 28
        else:
            r = rng.random()
            if r < 0.78:
                age = 25 + rng.random() * 31
            elif r < 0.92:
                age = 56 + rng.random() * 15
            else:
                age = 16 + rng.random() * 9
        return date.fromordinal(on.toordinal() - int(age * 365.2425))

    def _registration_personal(
        self, authority: Authority, site: Site, sex: str, birth: date
    ) -> dict[str, Any]:
        rng = self.rng
        fam = _FAMILY_NAMES[int(rng.random() * len(_FAMILY_NAMES))]
        if sex == _MALE or (sex == _NOT_STATED and rng.random() < 0.5):
            given = _MALE_NAMES[int(rng.random() * len(_MALE_NAMES))]
        else:
            given = _FEMALE_NAMES[int(rng.random() * len(_FEMALE_NAMES))]
        if rng.random() < 0.8:
            phone = f"0{_choice(rng, '789')}0-{_randint(rng, 1000, 9999)}-{_randint(rng, 0, 9999):04d}"
        else:
            phone = f"0{_randint(rng, 11, 99)}-{_randint(rng, 200, 999)}-{_randint(rng, 0, 9999):04d}"
        email = (
            f"{given[2]}.{fam[2]}{_randint(rng, 1, 99)}@{_choice(rng, _EMAIL_DOMAINS)}"
            if rng.random() < P_EMAIL
            else None
        )
        address = (
            f"{authority.prefecture}{authority.name}{_choice(rng, _TOWNS)}"
            f"{_randint(rng, 1, 5)}丁目{_randint(rng, 1, 30)}番{_randint(rng, 1, 20)}号"
        )
        serial = self.job_seeker_serial.get(site.office, 0) + 1
        self.job_seeker_serial[site.office] = serial
        return {
            "name": f"{fam[0]}\u3000{given[0]}",
            "name_kana": f"{fam[1]}\u3000{given[1]}",
            "birth_date": birth.isoformat(),
            "phone": phone,
            "email": email,
            "address": address,
            "job_seeker_number": f"{site.office}0-{serial:08d}",
        }

    def _case_number(self, lg: str, programme: str, on: date) -> str:
        key = f"{lg}:{programme}"
        n = self.case_serial.get(key, 0) + 1
        self.case_serial[key] = n
        return f"{_CASE_PREFIX[programme]}-{lg}-{on.year}-{n:05d}"

    def _consents(
        self,
        authority: Authority,
        site: Site,
        person_key: str,
        registered_on: date,
        reg_secs: int,
        timeline: list[tuple[date, frozenset[str]]],
    ) -> list[_Pending]:
        rng = self.rng
        consent_id = _hex128(rng)
        recipients = [
            {"kind": _KIND_AUTHORITY, "code": authority.code},
            {"kind": _KIND_OFFICE, "code": site.office},
        ]
        scopes = [_SHARE]
        if rng.random() < P_DISCLOSE_PLACEMENT:
            scopes.append(_DISCLOSE)
        if rng.random() < P_RETENTION_SUPPORT:
            scopes.append(_RETAIN)
        # The consent box is on the registration form itself, so it is signed with the registration.
        signed = reg_secs + 60 * _randint(rng, 0, 10)
        side = CaptureSide.HELLO_WORK if rng.random() < 0.7 else CaptureSide.AUTHORITY
        channel = CaptureChannel.PAPER_FORM if rng.random() < 0.75 else CaptureChannel.JOINT_RECEPTION
        out = [
            self._consent(
                authority, site, consent_id, 1, ConsentAction.GIVEN, person_key, scopes, recipients,
                registered_on, signed, side, channel,
            )
        ]  # fmt: skip
        timeline.append((registered_on, frozenset(scopes)))
        version = 1
        earliest = registered_on + timedelta(days=7)
        latest = min(registered_on + timedelta(days=180), self.horizon_end)
        changed = rng.random() < P_CONSENT_CHANGED
        withdrawn = rng.random() < P_CONSENT_WITHDRAWN
        last = earliest
        if changed and earliest <= latest:
            on = earliest + timedelta(days=_randint(rng, 0, (latest - earliest).days))
            toggled = _choice(rng, (_DISCLOSE, _RETAIN))
            scopes = [s for s in scopes if s != toggled] if toggled in scopes else [*scopes, toggled]
            version += 1
            out.append(self._counter_consent(authority, site, consent_id, version, ConsentAction.CHANGED,
                                             person_key, scopes, recipients, on))  # fmt: skip
            timeline.append((on, frozenset(scopes)))
            last = on + timedelta(days=1)
        if withdrawn and last <= latest:
            on = last + timedelta(days=_randint(rng, 0, (latest - last).days))
            version += 1
            # Recipients are kept so each side can see the withdrawal concerns what it had received.
            out.append(self._counter_consent(authority, site, consent_id, version, ConsentAction.WITHDRAWN,
                                             person_key, [], recipients, on))  # fmt: skip
            timeline.append((on, frozenset()))
        return out

    def _counter_consent(
        self,
        authority: Authority,
        site: Site,
        consent_id: str,
        version: int,
        action: ConsentAction,
        person_key: str,
        scopes: list[str],
        recipients: list[dict[str, str]],
        on: date,
    ) -> _Pending:
        rng = self.rng
        side = CaptureSide.AUTHORITY if rng.random() < 0.5 else CaptureSide.HELLO_WORK
        channel = (
            CaptureChannel.AUTHORITY_COUNTER
            if side is CaptureSide.AUTHORITY
            else CaptureChannel.HELLO_WORK_COUNTER
        )
        return self._consent(authority, site, consent_id, version, action, person_key, scopes, recipients,
                             on, _secs(on, _office_hours(rng)), side, channel)  # fmt: skip

    def _consent(
        self,
        authority: Authority,
        site: Site,
        consent_id: str,
        version: int,
        action: ConsentAction,
        person_key: str,
        scopes: list[str],
        recipients: list[dict[str, str]],
        valid_from: date,
        signed_secs: int,
        side: CaptureSide,
        channel: CaptureChannel,
    ) -> _Pending:
        rng = self.rng
        source = authority.source if side is CaptureSide.AUTHORITY else f"/hellowork/offices/{site.office}"
        return _Pending(
            secs=signed_secs + 60 * _randint(rng, 1, 120),
            family=Family.CONSENT,
            source=source,
            event_id=_hex128(rng),
            data={
                "consent_id": consent_id,
                "version": version,
                "action": action.value,
                "person_key": person_key,
                "scopes": list(scopes),
                "recipients": [dict(r) for r in recipients],
                "valid_from": valid_from.isoformat(),
                "form_version": FORM_VERSION,
                "captured": {
                    "side": side.value,
                    "site": site.site_id,
                    "channel": channel.value,
                    "signed_at": _instant(signed_secs).isoformat(),
                },
            },
        )

    def _placement(
        self,
        site: Site,
        person_key: str,
        registered_on: date,
        sex: str,
        birth: date,
        attribute_values: list[str],
        desired: str,
        events: list[_Pending],
    ) -> _Pending | None:
        rng = self.rng
        # Most placements come within the first two months; the tail runs to four.
        lag = min(MAX_PLACEMENT_LAG_DAYS, 3 + int(rng.expovariate(1 / 40)))
        placed_on = registered_on + timedelta(days=lag)
        if placed_on > self.horizon_end:
            return None
        route = (
            PlacementRoute.SELF_FOUND
            if rng.random() < self.profile.p_self_found
            else PlacementRoute.HELLO_WORK_REFERRAL
        )
        group = desired if rng.random() < P_DESIRED_OCCUPATION else _OCCUPATION_PICK.pick(rng)
        if rng.random() < P_LATE_PLACEMENT:
            # Reported after the feed for its month closed: the feed has to re-send that month.
            cutoff = _cutoff_for(placed_on)
            emitted_on = cutoff + timedelta(days=_randint(rng, 1, 40))
        else:
            emitted_on = placed_on + timedelta(days=_randint(rng, 0, 3))
        placement = _Pending(
            secs=_secs(emitted_on, _office_hours(rng)),
            family=Family.PLACEMENT,
            source=f"/hellowork/offices/{site.office}",
            event_id=_hex128(rng),
            data={
                "placement_id": _hex128(rng),
                "person_key": person_key,
                "office": site.office,
                "site": site.site_id,
                "placed_on": placed_on.isoformat(),
                "route": route.value,
                "occupation": {"group": group, "classification_version": CLASSIFICATION_VERSION},
                "employment_type": _EMPLOYMENT_PICK.pick(rng),
                "sex": sex,
                "age_band": age_band(age_on(birth, placed_on)).value,
                "attributes": list(attribute_values),
                "personal": {"employer_name": self._employer(group)},
            },
        )
        events.append(placement)
        return placement

    def _employer(self, group: str) -> str:
        rng = self.rng
        stem = _choice(rng, _EMPLOYER_STEMS)
        if group == "08" and rng.random() < 0.4:
            return f"社会福祉法人{stem}会"
        if group == "04" and rng.random() < 0.5:
            return f"医療法人{stem}会"
        trade = _choice(rng, _TRADES_BY_GROUP.get(group, _GENERIC_TRADES))
        r = rng.random()
        if r < 0.55:
            return f"株式会社{stem}{trade}"
        if r < 0.85:
            return f"{stem}{trade}株式会社"
        return f"有限会社{stem}{trade}"

    def _retention(
        self,
        authority: Authority,
        site: Site,
        placement: _Pending,
        timeline: list[tuple[date, frozenset[str]]],
        events: list[_Pending],
    ) -> None:
        rng = self.rng
        placed_on = date.fromisoformat(placement.data["placed_on"])
        left_on: date | None = None
        if rng.random() < P_LEFT_BY_SIX_MONTHS:
            left_on = placed_on + timedelta(days=_randint(rng, 7, 180))
        for months in (1, 3, 6):
            checked_on = _add_months(placed_on, months) + timedelta(days=_randint(rng, 0, 7))
            if checked_on > self.horizon_end:
                return
            left = left_on is not None and left_on <= checked_on
            # The authority follows up only where the person consented to retention support.
            scopes = frozenset[str]()
            for effective, s in timeline:
                if effective <= checked_on:
                    scopes = s
            by_authority = _RETAIN in scopes and rng.random() < 0.7
            data: dict[str, Any] = {
                "person_key": placement.data["person_key"],
                "placement_id": placement.data["placement_id"],
                "checkpoint_months": months,
                "status": (RetentionStatus.LEFT if left else RetentionStatus.EMPLOYED).value,
                "checked_on": checked_on.isoformat(),
                "site": site.site_id,
            }
            if left and left_on is not None:
                data["left_on"] = left_on.isoformat()
            events.append(
                _Pending(
                    secs=max(_secs(checked_on, _office_hours(rng)), placement.secs + 60),
                    family=Family.RETENTION,
                    source=authority.source if by_authority else f"/hellowork/offices/{site.office}",
                    event_id=_hex128(rng),
                    data=data,
                )
            )
            if left:
                return  # follow-up ends once the person has left

    @staticmethod
    def _disorder(
        events: list[_Pending],
        referral: _Pending | None,
        registration: _Pending,
        consents: list[_Pending],
        placement: _Pending | None,
    ) -> None:
        """Hold an earlier event back until a later one of the same person went out.

        What this mimics: a client system that queued the earlier event (a registration keyed in late
        from paper, a referral stuck in a batch) while another system already sent the later one. The
        held event keeps its own, earlier ``time``; only its place in the stream moves.
        """
        if placement is not None:
            held, anchor = [registration, *consents[:1]], placement
        elif consents:
            held, anchor = [registration], consents[0]
        elif referral is not None:
            held, anchor = [referral], registration
        else:
            return
        for h in held:
            events.remove(h)
        anchor.held = (*anchor.held, *held)


def _month_days(first: date, last: date) -> list[date]:
    # Counters open on weekdays only (public holidays are ignored: close enough for proportions).
    return [d for d in (first + timedelta(days=i) for i in range((last - first).days + 1)) if d.weekday() < 5]


def simulate(config: SimulationConfig) -> Iterator[Submission]:
    """Yield submissions in emission order, as the client systems together would send them."""
    gen = _Generator(config)
    rng = gen.rng
    heap: list[tuple[int, int, _Pending]] = []
    seq = 0
    for first, last in gen.months:
        days = _month_days(first, last)
        for authority in gen.authorities:
            for site in authority.sites:
                open_days = days if site.opens is None else [d for d in days if d >= site.opens]
                if not open_days:
                    continue
                lam = (
                    config.registrations_per_site_month
                    * gen.site_factor[site.site_id]
                    * len(open_days)
                    / len(days)
                )
                n = _poissonish(rng, lam)
                dates = sorted(open_days[int(rng.random() * len(open_days))] for _ in range(n))
                for registered_on in dates:
                    for pending in gen.person(authority, site, registered_on):
                        heapq.heappush(heap, (pending.secs, seq, pending))
                        seq += 1
        # People registered from next month on emit nothing before their referral, which is at most
        # MAX_REFERRAL_LEAD_DAYS before their registration: everything earlier is final.
        watermark = _secs(last + timedelta(days=1 - MAX_REFERRAL_LEAD_DAYS), 0)
        while heap and heap[0][0] < watermark:
            yield from _release(heapq.heappop(heap)[2])
    while heap:
        yield from _release(heapq.heappop(heap)[2])


def _release(pending: _Pending) -> list[Submission]:
    # Held events are never anchors themselves (see _disorder), so one level is enough.
    return [
        Submission(family=p.family, source=p.source, time=_instant(p.secs), data=p.data, event_id=p.event_id)
        for p in (pending, *pending.held)
    ]


# --- summaries and files -----------------------------------------------------------------------


def summarize(subs: Iterable[Submission]) -> dict[str, int]:
    """Counts a test or an operator can compare with the intended proportions."""
    counts: dict[str, int] = {f"family.{f.value}": 0 for f in Family}
    extra = (
        "total", "persons", "consent.given", "consent.changed", "consent.withdrawn", "referred_registrations",
        "placements.late", "placements.self_found", "retention.left", "team_support", "out_of_order",
        "stream_time_regressions", "authorities", "sites", "name_outside_cp932",
    )  # fmt: skip
    counts.update(dict.fromkeys(extra, 0))
    last_time: dict[str, datetime] = {}
    referred: set[str] = set()
    registered: set[str] = set()
    authorities: set[str] = set()
    sites: set[str] = set()
    stream_max: datetime | None = None
    for sub in subs:
        counts["total"] += 1
        counts[f"family.{sub.family.value}"] += 1
        data = sub.data
        key = sub.person_key
        if key in last_time and sub.time < last_time[key]:
            counts["out_of_order"] += 1
        if key not in last_time or sub.time > last_time[key]:
            last_time[key] = sub.time
        if stream_max is not None and sub.time < stream_max:
            counts["stream_time_regressions"] += 1
        else:
            stream_max = sub.time
        if "site" in data:
            sites.add(data["site"])
        if sub.family is Family.REGISTRATION:
            registered.add(key)
            authorities.add(data["authority"])
            counts["team_support"] += bool(data["team_support"])
            if _outside_cp932(data["personal"]["name"]):
                counts["name_outside_cp932"] += 1
        elif sub.family is Family.CONSENT:
            counts[f"consent.{data['action']}"] += 1
        elif sub.family is Family.REFERRAL:
            referred.add(key)
        elif sub.family is Family.PLACEMENT:
            counts["placements.self_found"] += data["route"] == PlacementRoute.SELF_FOUND.value
            if is_late(sub):
                counts["placements.late"] += 1
        elif sub.family is Family.RETENTION:
            counts["retention.left"] += data["status"] == RetentionStatus.LEFT.value
    counts["persons"] = len(last_time)
    counts["referred_registrations"] = len(referred & registered)
    counts["authorities"] = len(authorities)
    counts["sites"] = len(sites)
    return counts


def is_late(sub: Submission) -> bool:
    """A placement emitted after the feed cutoff for its placement month."""
    if sub.family is not Family.PLACEMENT:
        return False
    placed_on = date.fromisoformat(sub.data["placed_on"])
    return sub.time.astimezone(JST).date() > _cutoff_for(placed_on)


def _outside_cp932(text: str) -> bool:
    try:
        text.encode("cp932")
    except UnicodeEncodeError:
        return True
    return False


def write_jsonl(subs: Iterable[Submission], path: str | Path) -> int:
    n = 0
    with Path(path).open("wb") as fh:
        for sub in subs:
            fh.write(sub.to_json())
            fh.write(b"\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[Submission]:
    with Path(path).open("rb") as fh:
        for line in fh:
            if line.strip():
                yield Submission.from_json(line)
