"""W3C Trace Context as the hub's events carry it (the CloudEvents ``traceparent`` extension, in binary
mode the ``ce_traceparent`` header): its name and its rule. Pure, so that the envelope that reads it
(``contracts.envelope``) and the operators' header masking (``domain.monitoring``) share one definition.

Strict W3C Trace Context, version 00 only: exactly 55 characters, lowercase hex, ids not all zeros.
"""

from __future__ import annotations

import re

TRACEPARENT_HEADER = "ce_traceparent"
TRACEPARENT_LENGTH = 55
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN.encode())
_ZERO_TRACE, _ZERO_PARENT = b"0" * 32, b"0" * 16


def traceparent_refusal(raw: bytes) -> str | None:
    """The W3C rule a ``traceparent`` value breaks (never quoting it), or None when it is well-formed."""
    if len(raw) != TRACEPARENT_LENGTH:
        return f"not {TRACEPARENT_LENGTH} bytes (W3C traceparent version 00)"
    if not _TRACEPARENT.fullmatch(raw):
        return "does not match 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>"
    if raw[3:35] == _ZERO_TRACE:
        return "trace id is all zeros"
    if raw[36:52] == _ZERO_PARENT:
        return "parent id is all zeros"
    return None
