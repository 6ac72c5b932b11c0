"""Column tables of the batch files (CSV) that authority and Hello Work systems send, per event family.

Every column has an English name (the contract's field name) and a Japanese name as government
systems label it; a header may use either, or mix them. ``docs/adapters.md`` is generated from these
tables' content, so the two stay the same. Values may use the contract's English enum values or the
Japanese labels listed in ``synonyms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from contracts.events import ConsentAction


class Kind(StrEnum):
    TEXT = "text"  # kept as written (names, addresses: no normalisation of personal text)
    CODE = "code"  # codes and ids: NFKC (full-width digits are common in hand-typed forms), trimmed
    DATE = "date"  # ISO or Japanese era (令和6年4月1日, R6.4.1, 平成31年4月30日)
    DATETIME = "datetime"  # ISO 8601; without an offset it is Japan time; a bare date means 00:00 JST
    INT = "int"
    BOOL = "bool"  # true/false, 1/0, yes/no, はい/いいえ, 有/無, ○/×
    LIST = "list"  # items separated by ; or 、
    RECIPIENTS = "recipients"  # authority:131041;office:1301 (自治体:131041;安定所:1301)


@dataclass(frozen=True, slots=True)
class Column:
    en: str
    ja: str
    path: tuple[str, ...]
    kind: Kind = Kind.CODE
    required: bool = True
    synonyms: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # A list the contract does not need on some rows: an empty cell (or no such column) is the empty list
    # on a row whose field at this path holds this value, and absent on any other row (where the contract
    # says whether that is allowed). A file has no other way to write "none".
    none_when: tuple[tuple[str, ...], str] | None = None

    @property
    def personal(self) -> bool:
        """A cell of the sealed personal block (name, birth date, contacts, case number, employer …)."""
        return self.path[0] == "personal"


def _syn(**pairs: str) -> MappingProxyType[str, str]:
    return MappingProxyType(pairs)


SEX = MappingProxyType({"男": "male", "男性": "male", "女": "female", "女性": "female", "不詳": "not_stated"})
ATTRIBUTES = MappingProxyType(
    {
        "生活保護": "public_assistance",
        "生活保護受給者": "public_assistance",
        "児童扶養手当": "child_rearing_allowance",
        "児童扶養手当受給者": "child_rearing_allowance",
        "住居確保給付金": "housing_benefit",
        "住居確保給付金受給者": "housing_benefit",
        "生活困窮者": "needy_person_support",
        "生活困窮者自立支援": "needy_person_support",
        "障害者": "disability",
        "若者": "youth",
        "子育て": "parenting",
        "子育て中の方": "parenting",
        "一般": "general",
    }
)
_PERSON_KEY = Column("person_key", "個人キー", ("person_key",))
# The consent contract: a withdrawal carries no scopes and needs no recipients.
_WITHDRAWAL = (("action",), ConsentAction.WITHDRAWN.value)
_SITE = Column("site", "拠点ID", ("site",))
_OFFICE = Column("office", "安定所コード", ("office",))
_AUTHORITY = Column("authority", "自治体コード", ("authority",))
_SEX = Column("sex", "性別", ("sex",), synonyms=SEX)
_AGE_BAND = Column("age_band", "年齢階級", ("age_band",))
_ATTRIBUTES = Column("attributes", "属性", ("attributes",), Kind.LIST, synonyms=ATTRIBUTES)
# The 外国人 target group (e.g. 日系外国人): optional since v1.1, empty = not recorded.
_FOREIGN_NATIONAL = Column("foreign_national", "外国人", ("foreign_national",), Kind.BOOL, required=False)

COLUMNS: MappingProxyType[str, tuple[Column, ...]] = MappingProxyType(
    {
        "registration": (
            _PERSON_KEY,
            Column("registered_on", "求職申込日", ("registered_on",), Kind.DATE),
            _OFFICE,
            _SITE,
            _AUTHORITY,
            _SEX,
            _AGE_BAND,
            _ATTRIBUTES,
            Column("desired_occupation", "希望職業", ("desired_occupation", "group")),
            Column(
                "occupation_version",
                "職業分類版",
                ("desired_occupation", "classification_version"),
                required=False,
            ),
            Column("team_support", "チーム支援", ("team_support",), Kind.BOOL),
            _FOREIGN_NATIONAL,
            # Already applied (求職申込) at this other Hello Work office: not a new job seeker of the site.
            Column(
                "prior_application_office",
                "既申込安定所コード",
                ("prior_application_office",),
                required=False,
            ),
            Column("name", "氏名", ("personal", "name"), Kind.TEXT),
            Column("name_kana", "氏名カナ", ("personal", "name_kana"), Kind.TEXT, required=False),
            Column("birth_date", "生年月日", ("personal", "birth_date"), Kind.DATE),
            Column("phone", "電話番号", ("personal", "phone"), Kind.TEXT, required=False),
            Column("email", "メールアドレス", ("personal", "email"), Kind.TEXT, required=False),
            Column("address", "住所", ("personal", "address"), Kind.TEXT, required=False),
            Column("job_seeker_number", "求職番号", ("personal", "job_seeker_number"), required=False),
        ),
        "consent": (
            Column("consent_id", "同意ID", ("consent_id",)),
            Column("version", "版数", ("version",), Kind.INT),
            Column(
                "action",
                "同意区分",
                ("action",),
                synonyms=_syn(同意="given", 変更="changed", 撤回="withdrawn"),
            ),
            _PERSON_KEY,
            Column(
                "scopes",
                "同意範囲",
                ("scopes",),
                Kind.LIST,
                required=False,
                synonyms=_syn(
                    登録情報共有="share_registration",
                    就職情報提供="disclose_placement",
                    定着支援="retention_support",
                ),
                none_when=_WITHDRAWAL,
            ),
            Column(
                "recipients",
                "提供先",
                ("recipients",),
                Kind.RECIPIENTS,
                required=False,
                none_when=_WITHDRAWAL,
            ),
            Column("valid_from", "有効開始日", ("valid_from",), Kind.DATE),
            Column("valid_until", "有効終了日", ("valid_until",), Kind.DATE, required=False),
            Column("form_version", "様式版", ("form_version",)),
            Column(
                "captured_side",
                "取得側",
                ("captured", "side"),
                synonyms=_syn(自治体="authority", ハローワーク="hello_work"),
            ),
            Column("captured_site", "取得拠点ID", ("captured", "site")),
            Column(
                "captured_channel",
                "取得方法",
                ("captured", "channel"),
                synonyms=_syn(
                    登録票="paper_form",
                    合同受付="joint_reception",
                    自治体窓口="authority_counter",
                    ハローワーク窓口="hello_work_counter",
                ),
            ),
            Column("signed_at", "署名日時", ("captured", "signed_at"), Kind.DATETIME),
        ),
        "referral": (
            Column("referral_id", "送り込みID", ("referral_id",)),
            _PERSON_KEY,
            _AUTHORITY,
            _SITE,
            Column(
                "programme",
                "支援事業",
                ("programme",),
                synonyms=_syn(
                    生活保護受給者等就労自立促進事業="public_assistance_employment",
                    生活困窮者自立支援="needy_person_support",
                    ひとり親就業支援="child_rearing_support",
                    若者支援="youth_support",
                    障害者支援="disability_support",
                    一般="general",
                ),
            ),
            Column("referred_on", "送り込み日", ("referred_on",), Kind.DATE),
            # Enrolled in チーム支援 by the case conference, from this date (on or after referred_on).
            Column(
                "team_support_from", "チーム支援開始日", ("team_support_from",), Kind.DATE, required=False
            ),
            Column("case_number", "ケース番号", ("personal", "case_number"), Kind.TEXT, required=False),
        ),
        "placement": (
            Column("placement_id", "就職ID", ("placement_id",)),
            _PERSON_KEY,
            _OFFICE,
            _SITE,
            Column("placed_on", "就職日", ("placed_on",), Kind.DATE),
            Column(
                "route",
                "就職経路",
                ("route",),
                synonyms=_syn(紹介就職="hello_work_referral", 自己就職="self_found"),
            ),
            Column("occupation", "職業", ("occupation", "group")),
            Column(
                "occupation_version", "職業分類版", ("occupation", "classification_version"), required=False
            ),
            Column(
                "employment_type",
                "雇用形態",
                ("employment_type",),
                synonyms=_syn(
                    正社員="regular_full_time",
                    正社員以外フルタイム="non_regular_full_time",
                    パート="part_time",
                    臨時季節="temporary",
                ),
            ),
            _SEX,
            _AGE_BAND,
            _ATTRIBUTES,
            _FOREIGN_NATIONAL,
            Column("employer_name", "事業所名", ("personal", "employer_name"), Kind.TEXT),
            Column(
                "employer_address",
                "事業所所在地",
                ("personal", "employer_address"),
                Kind.TEXT,
                required=False,
            ),
        ),
        "retention": (
            _PERSON_KEY,
            Column("placement_id", "就職ID", ("placement_id",)),
            Column("checkpoint_months", "確認時点月数", ("checkpoint_months",), Kind.INT),
            Column("status", "定着状況", ("status",), synonyms=_syn(在職="employed", 離職="left")),
            Column("left_on", "離職日", ("left_on",), Kind.DATE, required=False),
            Column("checked_on", "確認日", ("checked_on",), Kind.DATE),
            _SITE,
        ),
    }
)
