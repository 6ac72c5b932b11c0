"""Occupation codes: the MHLW occupational classification (厚生労働省編職業分類), 2022 revision (令和4年改定).

Only the 15 major groups (大分類) are carried. Every code travels with its classification version
because the 2011 revision (平成23年改定) had 11 differently drawn major groups lettered A–K: a code read
against the wrong revision would land placements in the wrong group without any error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

CLASSIFICATION_VERSION = "MHLW-2022"
SUPPORTED_VERSIONS = frozenset({CLASSIFICATION_VERSION})


class OccupationError(ValueError):
    """An occupation code or classification version that breaks a rule; the message says which."""


@dataclass(frozen=True)
class OccupationGroup:
    code: str
    name_ja: str
    name_en: str


_GROUPS = (
    OccupationGroup("01", "管理的職業", "Managerial occupations"),
    OccupationGroup("02", "研究・技術の職業", "Research and engineering occupations"),
    OccupationGroup(
        "03",
        "法務・経営・文化芸術等の専門的職業",
        "Legal, business, cultural and artistic professional occupations",
    ),
    OccupationGroup("04", "医療・看護・保健の職業", "Medical, nursing and health occupations"),
    OccupationGroup("05", "保育・教育の職業", "Childcare and education occupations"),
    OccupationGroup("06", "事務的職業", "Clerical occupations"),
    OccupationGroup("07", "販売・営業の職業", "Sales occupations"),
    OccupationGroup("08", "福祉・介護の職業", "Social welfare and care occupations"),
    OccupationGroup("09", "サービスの職業", "Service occupations"),
    OccupationGroup("10", "警備・保安の職業", "Security occupations"),
    OccupationGroup("11", "農林漁業の職業", "Agriculture, forestry and fishery occupations"),
    OccupationGroup(
        "12",
        "製造・修理・塗装・製図等の職業",
        "Manufacturing, repair, painting and drafting occupations",
    ),
    OccupationGroup(
        "13",
        "配送・輸送・機械運転の職業",
        "Delivery, transport and machine operation occupations",
    ),
    OccupationGroup(
        "14",
        "建設・土木・電気工事の職業",
        "Construction, civil engineering and electrical work occupations",
    ),
    OccupationGroup(
        "15",
        "運搬・清掃・包装・選別等の職業",
        "Carrying, cleaning, packaging and sorting occupations",
    ),
)

OCCUPATION_GROUPS: Mapping[str, OccupationGroup] = MappingProxyType({g.code: g for g in _GROUPS})

_TWO_DIGITS = re.compile(r"[0-9]{2}")


def validate_occupation_group(code: str, version: str) -> str:
    """Return the two-digit major group code, or raise OccupationError saying why it is not one."""
    if version not in SUPPORTED_VERSIONS:
        raise OccupationError(
            "occupation classification version is not supported: expected "
            f"{CLASSIFICATION_VERSION} (recode earlier revisions before sending)"
        )
    # Full-width digits (０９) are common in data typed into government forms.
    normalised = unicodedata.normalize("NFKC", code).strip()
    if not _TWO_DIGITS.fullmatch(normalised):
        raise OccupationError(f"not an occupation major group code: expected two digits 01 to 15 ({version})")
    if normalised not in OCCUPATION_GROUPS:
        raise OccupationError(f"occupation major group does not exist in {version}: expected 01 to 15")
    return normalised
