"""The feed topic's record (``ittai.feed.v1``): one revision of one authority's monthly placement feed.

Aggregates only: every cell is a count or null (suppressed, with the reason), every indicator a count,
a ratio or null; nothing identifies a person. It travels like the five event families: CloudEvents 1.0
in binary content mode (``ce_type`` ``jp.ittai.feed.v1``, ``ce_source`` ``/hub/feed``, ``ce_subject`` and
Kafka key ``<authority>:<month>``), the value this model as JSON. Readers ignore unknown fields, so a
v1 revision may gain optional fields; removing or retyping one needs ``feed.v2``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from contracts.types import INSTANT_PATTERN, Timestamp, in_supported_range

FEED_EVENT_TYPE = "jp.ittai.feed.v1"
FEED_SOURCE = "/hub/feed"

Count = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FeedTable(_Model):
    """A one- or two-way table of one population; each cell: [key, value or null, suppression reason or
    null]. A key holds one category per dimension, or ``計`` for the margin over that dimension."""

    name: str = Field(description="<population>: <dimension> [× <dimension>]")
    dims: list[str] = Field(min_length=1, max_length=2)
    cells: list[tuple[list[str], Count | None, str | None]]


class GroupFigures(_Model):
    new_job_seekers: Count | None = None
    referral_placements: Count | None = None
    placement_rate: float | None = None


class IndicatorSet(_Model):
    """The programme's indicators (docs/feed.md names each with its definition and seed line); null
    where a count it reads is suppressed."""

    new_job_seekers: Count | None = Field(None, description="新規求職者数")
    referred_by_authority: Count | None = Field(None, description="うち自治体からの送り込み")
    referral_share: float | None = Field(None, description="送り込み割合（連携指標）")
    team_support: Count | None = Field(None, description="チーム支援対象者数（新規）")
    referral_placements: Count | None = Field(None, description="紹介就職件数 (就職件数)")
    self_found_placements: Count | None = Field(None, description="自己就職件数")
    confirmed_placements: Count | None = Field(None, description="就職確認数 = 紹介就職 + 自己就職")
    placement_rate: float | None = Field(None, description="就職率 = 紹介就職件数 / 新規求職者数, same sites")
    regular_placements: Count | None = Field(None, description="正社員就職件数")
    retention_1m_cohort: Count | None = None
    retention_1m_employed: Count | None = None
    retention_1m_rate: float | None = None
    retention_3m_cohort: Count | None = None
    retention_3m_employed: Count | None = None
    retention_3m_rate: float | None = None
    retention_6m_cohort: Count | None = None
    retention_6m_employed: Count | None = None
    retention_6m_rate: float | None = None
    by_group: dict[str, GroupFigures] = Field(default_factory=dict, description="per target group")


class Indicators(_Model):
    authority: IndicatorSet
    sites: dict[str, IndicatorSet]


class TargetResult(_Model):
    kind: str
    group: str | None = None
    value: float = Field(ge=0)
    result: float | None = Field(description="So far in the fiscal year; null where it may not be shown")
    status: str = Field(description="met | on_pace | behind")


class Evaluation(_Model):
    scope: str = Field(description="A site id or an authority's local government code")
    fiscal_year: int
    excluded: bool = Field(description="Left out of the evaluation (e.g. new that year)")
    targets: list[TargetResult]
    pace: str | None = Field(description="on_pace | behind; null when excluded")
    achievement: str | None = Field(
        description="At year end: all_met (全達成) | partly_met (一部達成) | none_met (未達成)"
    )


class Change(_Model):
    figure: str
    change: str = Field(description="changed | suppressed | published | added")
    before: Any = None
    after: Any = None


class FeedRevision(_Model):
    """One revision of an authority's monthly placement feed."""

    authority: str = Field(pattern=r"^[0-9]{6}$")
    month: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    revision: int = Field(ge=1)
    horizon: Timestamp = Field(description="Counts events sent up to this instant")
    threshold: int = Field(ge=1, description="Small-cell threshold")
    classification_version: str
    sites: list[str]
    layout: list[str] = Field(description="Own sites the tables break down by (fixed at revision 1)")
    populations: dict[str, list[FeedTable]]
    indicators: Indicators
    targets: list[Evaluation]
    changes: list[Change] = Field(
        description="What changed since the previous revision; never a hidden value"
    )


# --- the publishing path ------------------------------------------------------------------------------
# The builder publishes bodies it composed and kept itself. Validating them with the pydantic model on
# the way out cost ~2 ms a body (a national month: 3,100 bodies of ~37 KB, 6 s); these structs mirror
# ``FeedRevision`` field for field, with the same types, bounds and patterns, and msgspec checks and
# re-encodes them in C. ``tests/unit/test_feed_wire.py`` keeps the two equal: same fields, same bytes
# out, and whatever the model refuses the structs refuse, except inside a table's cells.
#
# A table's cells (~600 a body, nine in ten of its bytes) are published as the builder kept them,
# not read into objects and written again (that was 80% of the publishing: 1.8 of 2.3 s for a national
# month). Their check moved to where they are written: a cell is a layout's key, a count the feed
# summed or None, and a reason's name (``domain.disclosure._Cells``), written by orjson in compact form
# (``consumers.feed.builder._kept``), the only writer of kept bodies. ``test_feed_wire.py`` holds it
# (hypothesis over counts, thresholds, layouts and revisions: every kept body's cells are the model's
# and its published bytes the model's bytes).

_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Struct(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    pass


class _FeedTable(_Struct, frozen=True, kw_only=True):
    name: str
    dims: Annotated[list[str], msgspec.Meta(min_length=1, max_length=2)]
    cells: msgspec.Raw  # as kept (see above): well-formed JSON, an array (``encode_feed_revision``)


class _GroupFigures(_Struct, frozen=True, kw_only=True):
    new_job_seekers: _Count | None = None
    referral_placements: _Count | None = None
    placement_rate: float | None = None


class _IndicatorSet(_Struct, frozen=True, kw_only=True):
    new_job_seekers: _Count | None = None
    referred_by_authority: _Count | None = None
    referral_share: float | None = None
    team_support: _Count | None = None
    referral_placements: _Count | None = None
    self_found_placements: _Count | None = None
    confirmed_placements: _Count | None = None
    placement_rate: float | None = None
    regular_placements: _Count | None = None
    retention_1m_cohort: _Count | None = None
    retention_1m_employed: _Count | None = None
    retention_1m_rate: float | None = None
    retention_3m_cohort: _Count | None = None
    retention_3m_employed: _Count | None = None
    retention_3m_rate: float | None = None
    retention_6m_cohort: _Count | None = None
    retention_6m_employed: _Count | None = None
    retention_6m_rate: float | None = None
    by_group: dict[str, _GroupFigures] = {}


class _Indicators(_Struct, frozen=True, kw_only=True):
    authority: _IndicatorSet
    sites: dict[str, _IndicatorSet]


class _TargetResult(_Struct, frozen=True, kw_only=True):
    kind: str
    group: str | None = None
    value: Annotated[float, msgspec.Meta(ge=0)]
    result: float | None
    status: str


class _Evaluation(_Struct, frozen=True, kw_only=True):
    scope: str
    fiscal_year: int
    excluded: bool
    targets: list[_TargetResult]
    pace: str | None
    achievement: str | None


class _Change(_Struct, frozen=True, kw_only=True):
    figure: str
    change: str
    before: Any = None
    after: Any = None


class _FeedRevision(_Struct, frozen=True, kw_only=True):
    authority: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}\Z")]
    month: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])\Z")]
    revision: Annotated[int, msgspec.Meta(ge=1)]
    # Text in the contracts' one spelling of an instant (msgspec's own datetime reads lax ones: a space for
    # the T, +0900, seven fractional digits rounded), turned into a time by ``encode_feed_revision``.
    horizon: Annotated[str, msgspec.Meta(pattern=INSTANT_PATTERN.removesuffix("$") + r"\Z")]
    threshold: Annotated[int, msgspec.Meta(ge=1)]
    classification_version: str
    sites: list[str]
    layout: list[str]
    populations: dict[str, list[_FeedTable]]
    indicators: _Indicators
    targets: list[_Evaluation]
    changes: list[_Change]


_decode_revision = msgspec.json.Decoder(_FeedRevision).decode
_encode = msgspec.json.Encoder().encode
Invalid = msgspec.ValidationError


def feed_subject(authority: str, month: str) -> str:
    """The CloudEvents subject and Kafka key of a feed: one authority's month (revisions in order)."""
    return f"{authority}:{month}"


def encode_feed_revision(body: str | bytes, time: datetime) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    """(key, headers, value) in CloudEvents binary content mode, as the event families travel, of a
    kept revision's body (JSON text): checked against the contract (``Invalid`` if it breaks it) and
    written as ``FeedRevision.model_dump_json`` writes it."""
    revision = _decode_revision(body)
    for tables in revision.populations.values():
        for table in tables:
            if memoryview(table.cells)[:1] != b"[":  # msgspec read it as well-formed JSON
                raise Invalid(f"populations: the cells of {table.name!r} are not an array")
    try:
        horizon = datetime.fromisoformat(revision.horizon)  # the pattern held: a real day and hour remain
    except ValueError:
        raise Invalid("horizon: not a real day and time") from None
    if not in_supported_range(horizon):
        raise Invalid("horizon: outside the supported range")
    # Written as the model writes a time (msgspec and pydantic both give ``Z`` for UTC).
    msgspec.structs.force_setattr(revision, "horizon", horizon)
    subject = feed_subject(revision.authority, revision.month)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"feed-{revision.authority}-{revision.month}-r{revision.revision}".encode()),
        ("ce_source", FEED_SOURCE.encode()),
        ("ce_type", FEED_EVENT_TYPE.encode()),
        ("ce_subject", subject.encode()),
        ("ce_time", time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    return subject.encode(), headers, _encode(revision)
