"""The five event families' data, as pydantic v2 models.

Wire rule: statistical attributes (sex, age band, attribute categories, occupation group, employment
type, route, dates) travel readable; everything that identifies a person (name, kana, birth date,
contacts, address, employer, job seeker and case numbers) travels only inside ``personal``, a block
sealed with that person's data key (see ``infra.crypto``). Deleting the key erases the person everywhere
the event went.

Models read tolerantly (unknown fields are ignored, so adding an optional field is not a breaking
change for a consumer of the previous version); edges that take input from client systems validate
with ``extra="forbid"`` so unknown fields are rejected, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from contracts.types import (
    INT32_MAX,
    PRINTABLE_PATTERN,
    AgeBand,
    AttributeCategory,
    BirthDate,
    CheckpointMonths,
    Day,
    JobSeekerNumber,
    LocalGovernmentCode,
    OfficeCode,
    PersonKey,
    Sex,
    SiteId,
    Timestamp,
)
from domain.codes import validate_local_government_code
from domain.occupation import CLASSIFICATION_VERSION, SUPPORTED_VERSIONS, validate_occupation_group

EventId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="Business id (32 hex)")]


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False, str_strip_whitespace=False)


_M = TypeVar("_M", bound=BaseModel)


def built(model: type[_M], fields_set: set[str], values: dict[str, Any]) -> _M:
    """``model.model_construct(fields_set, **values)`` for values already valid with EVERY field given
    (defaults included), as in a validated model's ``__dict__``: pydantic's walks each field's aliases and
    defaults in Python, about a tenth of the CPU of preparing a CSV row twice over (the event and its
    sealed block). ``values`` becomes the instance's ``__dict__``. Only for models without ``extra =
    "allow"``, private attributes or ``model_post_init`` (``tests/unit/test_built.py`` holds every
    contract to that, and the result equal to ``model_construct``'s)."""
    m = model.__new__(model)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", fields_set)
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m


def _base64url_length(cls: type, value: str) -> str:
    # No base64 text is 4n+1 characters long (one character holds 6 of a byte's 8 bits): the opener could
    # not read such a ciphertext, and a rogue record needs no key to carry one.
    if len(value) % 4 == 1:
        raise ValueError("not a base64url length (4n+1 characters)")
    return value


class Sealed(Contract):
    """Personal data sealed with the person's data key (AES-256-GCM, person key as associated data)."""

    alg: Literal["A256GCM"] = "A256GCM"
    kid: str = Field(
        pattern=r"^pdk-[0-9a-f]{32}-[0-9]+$", description="Data key id: pdk-<person key>-<version>"
    )
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16}$", description="96-bit nonce, base64url")
    ct: str = Field(
        min_length=22,
        max_length=16384,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Ciphertext with GCM tag, base64url (unpadded: never 4n+1 characters)",
    )

    _ct = field_validator("ct")(_base64url_length)


class Occupation(Contract):
    """職業: a major group of the MHLW occupational classification, with the classification version."""

    group: str = Field(pattern=r"^(0[1-9]|1[0-5])$", description="Major group 01–15")
    classification_version: str = Field(
        default=CLASSIFICATION_VERSION,
        pattern=r"^[A-Za-z0-9._-]{1,20}$",
        json_schema_extra={"enum": list[JsonValue](sorted(SUPPORTED_VERSIONS))},
    )

    @model_validator(mode="after")
    def _known_group(self) -> Occupation:
        validate_occupation_group(self.group, self.classification_version)
        return self


def _unique_attributes(cls: type, value: list[AttributeCategory]) -> list[AttributeCategory]:
    if len(set(value)) != len(value):
        raise ValueError("attribute categories must be unique")
    return value


# --- registration ------------------------------------------------------------------------------


class RegistrationPersonal(Contract):
    """Inside ``Registration.personal`` once opened."""

    name: str = Field(min_length=1, max_length=100, pattern=PRINTABLE_PATTERN)
    name_kana: str | None = Field(default=None, max_length=200, pattern=PRINTABLE_PATTERN)
    birth_date: BirthDate
    phone: str | None = Field(default=None, max_length=30, pattern=PRINTABLE_PATTERN)
    email: str | None = Field(default=None, max_length=254, pattern=PRINTABLE_PATTERN)
    address: str | None = Field(default=None, max_length=300, pattern=PRINTABLE_PATTERN)
    job_seeker_number: JobSeekerNumber | None = None


class Registration(Contract):
    """求職申込: a person applied as a job seeker at a joint site, on the common registration form."""

    person_key: PersonKey
    registered_on: Day
    office: OfficeCode
    site: SiteId
    authority: LocalGovernmentCode
    sex: Sex
    age_band: AgeBand = Field(description="Age band on the registration date")
    attributes: list[AttributeCategory] = Field(
        min_length=1, max_length=8, json_schema_extra={"uniqueItems": True}
    )
    desired_occupation: Occupation
    team_support: bool = Field(
        strict=True,
        description="In チーム支援 (team support by both sides) from registration; a later enrolment is a "
        "referral's team_support_from",
    )
    personal: Sealed
    foreign_national: bool | None = Field(
        default=None,
        strict=True,
        description="In the 外国人 target group (e.g. 日系外国人); absent when not recorded. Optional since "
        "v1.1 (a reader of v1.0 ignores it).",
    )
    # [0-9], not \d: pydantic's regex reads \d as any Unicode digit, and codes are ASCII (P1).
    prior_application_office: str | None = Field(
        default=None,
        pattern=r"^[0-9]{4}$",
        description="The person had already applied (求職申込) at this other Hello Work office; the "
        "application is shared with the joint site under the person's consent. Such a registration is "
        "not a new job seeker (新規求職者) of the site. Optional since v1.1.",
    )

    _unique = field_validator("attributes")(_unique_attributes)

    @model_validator(mode="after")
    def _site_belongs_to_authority(self) -> Registration:
        if self.site[:6] != self.authority:
            raise ValueError("site is not run by authority (its first six digits)")
        return self


# --- consent -----------------------------------------------------------------------------------


class ConsentAction(StrEnum):
    GIVEN = "given"
    CHANGED = "changed"
    WITHDRAWN = "withdrawn"


class ConsentScope(StrEnum):
    """What the person agreed to (同意の範囲); each scope is also its purpose."""

    SHARE_REGISTRATION = "share_registration"  # registration data shared between both sides
    DISCLOSE_PLACEMENT = "disclose_placement"  # placement with name and employer to the authority
    RETENTION_SUPPORT = "retention_support"  # 定着支援: post-placement follow-up by the authority


class RecipientKind(StrEnum):
    AUTHORITY = "authority"
    OFFICE = "office"


# Enum members as module names for the validators: ``RecipientKind.AUTHORITY`` goes through the enum's
# metaclass on every read (about 0.3 µs on Python 3.11), and these run for every event a consumer reads.
_AUTHORITY = RecipientKind.AUTHORITY


class Recipient(Contract):
    kind: RecipientKind
    code: str = Field(
        pattern=r"^(\d{4}|\d{6})$",
        description="Local government code (6 digits) for an authority, office code (4 digits) for an office",
    )

    @model_validator(mode="after")
    def _code_matches_kind(self) -> Recipient:
        if self.kind is _AUTHORITY:
            validate_local_government_code(self.code)
        elif not (len(self.code) == 4 and self.code.isascii() and self.code.isdigit()):
            raise ValueError("office recipient code must be 4 digits")
        return self


_WITHDRAWN = ConsentAction.WITHDRAWN


class CaptureChannel(StrEnum):
    PAPER_FORM = "paper_form"  # the consent box (同意欄) on the common registration form
    JOINT_RECEPTION = "joint_reception"
    AUTHORITY_COUNTER = "authority_counter"
    HELLO_WORK_COUNTER = "hello_work_counter"


class CaptureSide(StrEnum):
    AUTHORITY = "authority"
    HELLO_WORK = "hello_work"


class ConsentCapture(Contract):
    side: CaptureSide
    site: SiteId
    channel: CaptureChannel
    signed_at: Timestamp


class Consent(Contract):
    """Consent given, changed or withdrawn. The newest ``version`` of a ``consent_id`` wins."""

    consent_id: EventId
    version: int = Field(
        ge=1,
        le=INT32_MAX,
        strict=True,
        description='This consent\'s version (the newest wins): an integer written as one — 2, not 2.0 or "2"',
    )
    action: ConsentAction
    person_key: PersonKey
    scopes: list[ConsentScope] = Field(max_length=3, json_schema_extra={"uniqueItems": True})
    recipients: list[Recipient] = Field(max_length=20)
    valid_from: Day
    valid_until: Day | None = None
    form_version: str = Field(
        min_length=1, max_length=40, pattern=PRINTABLE_PATTERN, examples=["common-form-2016.1"]
    )
    captured: ConsentCapture

    @model_validator(mode="after")
    def _coherent(self) -> Consent:
        if self.action is _WITHDRAWN:
            if self.scopes:
                raise ValueError("a withdrawal carries no scopes")
        else:
            if not self.scopes:
                raise ValueError(f"consent {self.action.value} needs at least one scope")
            if not self.recipients:
                raise ValueError(f"consent {self.action.value} needs at least one recipient")
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("consent scopes must be unique")
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


# --- referral ----------------------------------------------------------------------------------


class Programme(StrEnum):
    """Support programme under which the authority refers (送り込み) the person."""

    PUBLIC_ASSISTANCE_EMPLOYMENT = "public_assistance_employment"  # 生活保護受給者等就労自立促進事業
    NEEDY_PERSON_SUPPORT = "needy_person_support"  # 生活困窮者自立支援制度
    CHILD_REARING_SUPPORT = "child_rearing_support"  # ひとり親の就業支援
    YOUTH_SUPPORT = "youth_support"
    DISABILITY_SUPPORT = "disability_support"
    GENERAL = "general"


class ReferralPersonal(Contract):
    case_number: str = Field(
        min_length=1,
        max_length=40,
        pattern=PRINTABLE_PATTERN,
        description="Authority case number (ケース番号)",
    )


class Referral(Contract):
    """送り込み: a case worker sent the person to the Hello Work counter at a joint site."""

    referral_id: EventId
    person_key: PersonKey
    authority: LocalGovernmentCode
    site: SiteId
    programme: Programme
    referred_on: Day
    personal: Sealed | None = None
    team_support_from: Day | None = Field(
        default=None,
        description="チーム支援: the case conference (ケース会議) of the authority and Hello Work enrolled the "
        "person in team support from this date, often weeks after registration. Optional since v1.1.",
    )

    @model_validator(mode="after")
    def _site_belongs_to_authority(self) -> Referral:
        if self.site[:6] != self.authority:
            raise ValueError("site is not run by authority (its first six digits)")
        if self.team_support_from is not None and self.team_support_from < self.referred_on:
            raise ValueError(
                "team_support_from is before referred_on: the case conference follows the referral"
            )
        return self


# --- placement ---------------------------------------------------------------------------------


class PlacementRoute(StrEnum):
    HELLO_WORK_REFERRAL = "hello_work_referral"  # 紹介就職
    SELF_FOUND = "self_found"  # 自己就職


class EmploymentType(StrEnum):
    REGULAR_FULL_TIME = "regular_full_time"  # 正社員
    NON_REGULAR_FULL_TIME = "non_regular_full_time"  # フルタイム (正社員以外)
    PART_TIME = "part_time"  # パート
    TEMPORARY = "temporary"  # 臨時・季節


class PlacementPersonal(Contract):
    employer_name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE_PATTERN)
    employer_address: str | None = Field(default=None, max_length=300, pattern=PRINTABLE_PATTERN)


# Every model a sealed ``personal`` block holds once opened: names, contacts, employers, birth dates, the
# job-seeker number. The one list of them (contracts.wire keeps no memo of their values; envelope maps them
# to their families).
PERSONAL_BLOCKS: tuple[type[Contract], ...] = (RegistrationPersonal, ReferralPersonal, PlacementPersonal)


class Placement(Contract):
    """就職: the person got a job. Statistical attributes ride along so the feed needs no join."""

    placement_id: EventId
    person_key: PersonKey
    office: OfficeCode
    site: SiteId
    placed_on: Day
    route: PlacementRoute
    occupation: Occupation
    employment_type: EmploymentType
    sex: Sex
    age_band: AgeBand = Field(description="Age band on the placement date")
    attributes: list[AttributeCategory] = Field(
        min_length=1, max_length=8, json_schema_extra={"uniqueItems": True}
    )
    personal: Sealed = Field(description="Sealed PlacementPersonal (employer)")
    foreign_national: bool | None = Field(
        default=None,
        strict=True,
        description="In the 外国人 target group; absent when not recorded. Optional since v1.1.",
    )

    _unique = field_validator("attributes")(_unique_attributes)


# --- retention ---------------------------------------------------------------------------------


class RetentionStatus(StrEnum):
    EMPLOYED = "employed"
    LEFT = "left"


_LEFT, _EMPLOYED = RetentionStatus.LEFT, RetentionStatus.EMPLOYED


class Retention(Contract):
    """定着: follow-up 1, 3 or 6 months after a placement."""

    person_key: PersonKey
    placement_id: EventId
    checkpoint_months: CheckpointMonths
    status: RetentionStatus
    left_on: Day | None = None
    checked_on: Day
    site: SiteId

    @model_validator(mode="after")
    def _left_has_date(self) -> Retention:
        if self.status is _LEFT and self.left_on is None:
            raise ValueError("status 'left' needs left_on")
        if self.status is _EMPLOYED and self.left_on is not None:
            raise ValueError("status 'employed' takes no left_on")
        return self


# --- erasure -----------------------------------------------------------------------------------


class Erasure(Contract):
    """消去: the hub erased a person (``hub erase``, operators only). Their data key is deleted already, so
    every sealed copy of their personal data is unreadable; this event tells every consumer and every
    service holding a key in memory to drop what it keeps about them. Published by the hub's operator
    side only (``ce_source`` ``/hub/operator``; consumers dead-letter any other source), and signed
    there: ``signature`` is the operator's Ed25519 signature over its claim (``ErasureClaim.statement``),
    which every service acting on an erasure verifies with the operator's public key, so Kafka write
    access (a leaked producer password) cannot forge one. ``key_id`` names which of the operator's keys signed it, so keys
    can be rotated: a verifier holds a set of public keys by id, and an older erasure verifies while its
    key is listed. It carries no personal data: the person key, the erasure's id, when it happened, the
    key id and the signature."""

    person_key: PersonKey
    erasure_id: EventId
    erased_at: Timestamp = Field(description="When the erasure committed (the data key was deleted)")
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="Which operator erasure key signed it: the first 8 bytes of the SHA-256 of its Ed25519 "
        "public key, hex (hub erasure-key prints it)",
    )
    signature: str = Field(
        pattern=r"^[A-Za-z0-9_-]{86}$",
        description="Ed25519 signature (64 bytes, base64url without padding) by the hub's operator erasure "
        "key over the erasure statement: family, environment, topic namespace, key id, event id, subject, "
        "source, person key, erasure id, time",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureClaim:
    """What one erasure says, as its signature vouches for it: the event's identity (id, subject, source),
    whom it erases (the data's person key) and the erasure's id and time. The operator side signs one
    (``infra.signing.ErasureSigner.sign``) and every service acting on an erasure verifies the one its
    event carries (``ErasureVerifier``): one value, so the two cannot list the fields differently."""

    event_id: str
    subject: str
    source: str
    person_key: str
    erasure_id: str
    erased_at: datetime

    def statement(self, *, environment: str, namespace: str, key_id: str) -> bytes:
        """What the signature covers, one field a line: the deployment it is for (the environment and the
        topic namespace: an erasure signed for staging, copied into production's topic, must not verify
        there even if the two shared a key), the key that signs it, then the claim: the event's identity,
        whom it erases (the subject consumers act on and the data's person key, both) and when. Times as
        UTC microseconds, so the signer's datetime and the one a consumer decodes from the JSON give the
        same bytes. By the time one is verified no field can hold a line break (each is held to a
        pattern, the source to the operator's), so lines cannot shift."""
        at = self.erased_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines = [
            "ittai.erasure.v1",
            environment,
            namespace,
            key_id,
            self.event_id,
            self.subject,
            self.source,
            self.person_key,
            self.erasure_id,
            at,
        ]
        return "\n".join(lines).encode()
