"""W3C Trace Context as the hub's events carry it (the CloudEvents distributed-tracing extension's
``traceparent`` and ``tracestate``, in binary mode the ``ce_traceparent`` and ``ce_tracestate``
headers): their names and their rules. Pure, so that the envelope that reads them
(``contracts.envelope``) and the operators' header masking (``domain.monitoring``) share one definition.

``traceparent``: strict W3C Trace Context, version 00 only: exactly 55 characters, lowercase hex, ids
not all zeros.

``tracestate``: the W3C list of vendors' ``key=value`` members, at most 32, keys unique, keys and
values in the characters W3C allows (printable ASCII; a value has no ``,`` or ``=``), optional
whitespace around the commas, empty members allowed. Whole: at most 512 bytes, the length W3C asks
every vendor to propagate (a longer list may be cut by any hop; here it is refused, never cut, so what
the hub carries is what it was given).
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


TRACESTATE_HEADER = "ce_tracestate"
TRACESTATE_MAX_BYTES = 512
TRACESTATE_MAX_MEMBERS = 32
_KEY = rb"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
_VALUE = rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rb"(" + _KEY + rb")=" + _VALUE)
# The list as one pattern (for the JSON Schema; the count and uniqueness of keys are checked in code).
TRACESTATE_PATTERN = (
    "^[ \\t]*("
    + (_MEMBER.pattern.decode())
    + ")?([ \\t]*,[ \\t]*("
    + _MEMBER.pattern.decode()
    + ")?)*[ \\t]*$"
)


def tracestate_refusal(raw: bytes) -> str | None:
    """The W3C rule a ``tracestate`` value breaks (naming a member by its place, never quoting it), or
    None when it is well-formed."""
    if len(raw) > TRACESTATE_MAX_BYTES:
        return f"longer than {TRACESTATE_MAX_BYTES} bytes"
    members = [m.strip(b" \t") for m in raw.split(b",")]
    members = [m for m in members if m]  # empty and whitespace-only members are allowed
    if len(members) > TRACESTATE_MAX_MEMBERS:
        return f"more than {TRACESTATE_MAX_MEMBERS} list-members"
    keys: set[bytes] = set()
    for place, member in enumerate(members, start=1):
        match = _MEMBER.fullmatch(member)
        if match is None:
            return f"list-member {place}: not key=value in W3C tracestate characters"
        if match[1] in keys:
            return f"list-member {place}: repeats the key of an earlier one"
        keys.add(match[1])
    return None


def tracestate_members(text: str) -> list[tuple[str, str]]:
    """The (key, value) members of a well-formed ``tracestate`` (``tracestate_refusal`` said None)."""
    out = []
    for member in text.split(","):
        member = member.strip(" \t")
        if member:
            key, _, value = member.partition("=")
            out.append((key, value))
    return out
