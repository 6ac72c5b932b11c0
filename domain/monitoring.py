"""What operators see, as plain values and pure functions (no I/O): offsets, lag, rates, masking.

Everything the console and ``hub status`` show is computed here from rows and offsets the collectors
read, so the arithmetic is tested without a broker. Masking lives here too: operators see envelope
headers and reasons, never payloads, and a header or reason that does not look like what the hub
writes is hidden rather than shown (a client may have put anything there).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from domain.trace_context import TRACEPARENT_HEADER, TRACEPARENT_PATTERN


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    partition: int
    begin: int
    end: int  # the offset the next record will get (Kafka's "end offset")


@dataclass(frozen=True, slots=True)
class Sample:
    at: datetime
    end_total: int


@dataclass(frozen=True, slots=True)
class TopicFigures:
    topic: str
    partitions: tuple[PartitionOffsets, ...]
    samples: tuple[Sample, ...] = ()

    @property
    def end_total(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def records(self) -> int:
        """Records currently held (end minus begin); equals end_total while retention keeps everything."""
        return sum(p.end - p.begin for p in self.partitions)

    def rate(self, window_s: float) -> float | None:
        return rate_per_second(self.samples, window_s)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    next_offset: int | None  # None: the consumer never processed this partition
    end: int
    lag: int
    last_event_time: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConsumerFigures:
    consumer: str
    partitions: tuple[PartitionLag, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def last_processed_at(self) -> datetime | None:
        times = [p.updated_at for p in self.partitions if p.updated_at is not None]
        return max(times) if times else None

    @property
    def last_event_time(self) -> datetime | None:
        times = [p.last_event_time for p in self.partitions if p.last_event_time is not None]
        return max(times) if times else None


@dataclass(frozen=True, slots=True)
class OffsetRow:
    """One row of ``consumer_offsets``."""

    consumer: str
    topic: str
    partition: int
    next_offset: int
    last_event_time: datetime | None
    updated_at: datetime | None


def consumer_lag(rows: Iterable[OffsetRow], topics: Mapping[str, TopicFigures]) -> list[ConsumerFigures]:
    """Lag per partition for every consumer that has saved a position on one of ``topics``.

    A partition of a topic the consumer reads but has no position for counts in full (the runtime starts
    such a partition from the beginning). Positions on topics not in ``topics`` (another namespace) are
    ignored. A position past the end (a topic recreated under a consumer) counts as no lag, not negative.
    """
    by_consumer: dict[str, dict[tuple[str, int], OffsetRow]] = {}
    for row in rows:
        if row.topic in topics:
            by_consumer.setdefault(row.consumer, {})[(row.topic, row.partition)] = row
    result = []
    for consumer in sorted(by_consumer):
        positions = by_consumer[consumer]
        lags = []
        for topic in sorted({t for t, _ in positions}):
            for p in topics[topic].partitions:
                saved = positions.get((topic, p.partition))
                if saved is None:
                    lags.append(PartitionLag(topic, p.partition, None, p.end, p.end - p.begin, None, None))
                else:
                    lag = max(0, p.end - max(saved.next_offset, p.begin))
                    lags.append(
                        PartitionLag(
                            topic,
                            p.partition,
                            saved.next_offset,
                            p.end,
                            lag,
                            saved.last_event_time,
                            saved.updated_at,
                        )
                    )
        result.append(ConsumerFigures(consumer, tuple(lags)))
    return result


def rate_per_second(samples: Sequence[Sample], window_s: float) -> float | None:
    """Records per second over the last ``window_s`` seconds of samples (None with fewer than two)."""
    if len(samples) < 2:
        return None
    ordered = sorted(samples, key=lambda s: s.at)
    last = ordered[-1]
    inside = [s for s in ordered if (last.at - s.at).total_seconds() <= window_s]
    first = inside[0] if len(inside) >= 2 else ordered[-2]
    seconds = (last.at - first.at).total_seconds()
    if seconds <= 0:
        return None
    return max(0, last.end_total - first.end_total) / seconds


def rates_between(samples: Sequence[Sample]) -> list[tuple[datetime, float]]:
    """Records per second between consecutive samples, stamped with the later sample's time."""
    ordered = sorted(samples, key=lambda s: s.at)
    out = []
    for a, b in itertools.pairwise(ordered):
        seconds = (b.at - a.at).total_seconds()
        if seconds > 0:
            out.append((b.at, max(0, b.end_total - a.end_total) / seconds))
    return out


# --- dead letters ----------------------------------------------------------------------------------

# Only headers the hub's envelope writes are shown, and only when their value has the shape the hub
# gives them; anything else is replaced by HIDDEN. ce_subject (the person key) is shortened: it is a
# pseudonym, but operators need no more than enough to tell two letters apart.
HIDDEN = "‹hidden›"
_SHOWN_HEADERS: dict[str, re.Pattern[str]] = {
    "ce_id": re.compile(r"^[0-9a-zA-Z_-]{1,64}$"),
    "ce_type": re.compile(r"^[a-z0-9][a-z0-9._-]{0,80}$"),
    "ce_source": re.compile(r"^/[a-z_]+(/[a-zA-Z0-9_.-]{1,40}){0,4}$"),
    "ce_time": re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+\-Z]{5,30}$"),
    "ce_specversion": re.compile(r"^[0-9]\.[0-9]$"),
    "content-type": re.compile(r"^[a-z]+/[a-z0-9.+-]{1,40}$"),
    TRACEPARENT_HEADER: re.compile(TRACEPARENT_PATTERN),  # W3C trace context: ids only
}
_PERSON_KEY = re.compile(r"^[0-9a-f]{32}$")


def safe_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Envelope headers as operators may see them (never the value, never unexpected content)."""
    shown: dict[str, str] = {}
    for name, raw in headers:
        try:
            text = raw.decode() if raw is not None else ""
        except UnicodeDecodeError:
            text = ""
        if name == "ce_subject":
            shown[name] = f"{text[:6]}…" if _PERSON_KEY.match(text) else HIDDEN
        elif name in _SHOWN_HEADERS:
            shown[name] = text if _SHOWN_HEADERS[name].match(text) else HIDDEN
    return shown


def redrive_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The original headers of a dead letter: everything but the ``dlq_*`` headers the runtime added."""
    return [(k, v) for k, v in headers if not k.startswith("dlq_")]


def record_digest(key: bytes | None, headers: Iterable[tuple[str, bytes]], value: bytes | None) -> bytes:
    """SHA-256 of a dead letter's original record: key, the headers a redrive keeps (``redrive_headers``)
    and value, each length-prefixed (absent apart from empty), so no two records share one encoding.
    The register keeps it for the record the consumer refused; the desk redrives only a dead-letter
    record with the same digest (a writer of the dead-letter topic can claim any letter's position)."""
    h = hashlib.sha256()

    def part(data: bytes | None) -> None:
        h.update(b"\x00" if data is None else b"\x01" + len(data).to_bytes(8, "big") + data)

    part(key)
    kept = redrive_headers(headers)
    h.update(len(kept).to_bytes(8, "big"))
    for name, raw in kept:
        part(name.encode("utf-8", "surrogatepass"))
        part(raw)
    part(value)
    return h.digest()


def outbox_row_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str] | str:
    """A dead letter's original headers as the outbox keeps them (text by name), or why they cannot be:
    a redrive goes through the outbox like every event, and the outbox holds UTF-8 text without NUL,
    one value per name. The reason never quotes a header (a client may have put anything there)."""
    out: dict[str, str] = {}
    for name, value in redrive_headers(headers):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return "a header value is not UTF-8 text, which the outbox cannot carry"
        if "\x00" in name or "\x00" in text:
            return "a header holds a NUL character, which the outbox cannot carry"
        if name in out:
            return "a header name repeats, which the outbox cannot carry"
        out[name] = text
    if not out.get("ce_id"):
        return "the record has no ce_id header (no event id to publish it under)"
    return out


def dlq_header(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode(errors="replace")
    return None


_ECHOED_VALUE = re.compile(r"\(got .*?\)(?=;|$)")


def mask_reason(reason: str) -> str:
    """A dead-letter reason without the input values that validation messages echo ``(got …)``.

    The runtime already keeps sealed and nested values out of reasons; a scalar field a client filled
    wrongly is still echoed, and a misplaced name would be echoed with it, so the console drops them.
    """
    return _ECHOED_VALUE.sub("(got ‹masked›)", reason)


@dataclass(frozen=True, slots=True)
class LetterRow:
    """One ``dead_letters`` register row with what the console knows about its message."""

    id: int
    consumer: str
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    dead_lettered_at: datetime
    located: bool
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LetterGroup:
    """One dead-lettered message: several consumers may have rejected the same source record."""

    id: int  # the lowest register id in the group: what the page posts back
    source_topic: str
    source_partition: int
    source_offset: int
    consumers: tuple[str, ...]
    reasons: tuple[str, ...]
    first_at: datetime
    located: bool
    headers: Mapping[str, str]
    register_ids: tuple[int, ...]


def group_letters(rows: Iterable[LetterRow]) -> list[LetterGroup]:
    """Group register rows by source record, newest first. Redriving a group re-publishes it once."""
    groups: dict[tuple[str, int, int], list[LetterRow]] = {}
    for row in rows:
        groups.setdefault((row.source_topic, row.source_partition, row.source_offset), []).append(row)
    out = []
    for (topic, partition, offset), members in groups.items():
        members.sort(key=lambda r: r.id)
        headers = next((m.headers for m in members if m.headers), {})
        out.append(
            LetterGroup(
                id=members[0].id,
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                consumers=tuple(m.consumer for m in members),
                reasons=tuple(dict.fromkeys(mask_reason(m.reason) for m in members)),
                first_at=min(m.dead_lettered_at for m in members),
                located=any(m.located for m in members),
                headers=headers,
                register_ids=tuple(m.id for m in members),
            )
        )
    out.sort(key=lambda g: (g.first_at, g.id), reverse=True)
    return out
