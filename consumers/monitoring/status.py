"""``hub status``: the console's essentials as rich tables in the terminal."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from consumers.monitoring.snapshot import Snapshot


def _n(value: float | int | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = (datetime.now(UTC) - value).total_seconds()
    return f"{seconds:,.0f} s ago" if seconds < 3600 else f"{seconds / 3600:,.1f} h ago"


def render(snap: Snapshot, out: Console) -> None:
    if snap.kafka_error:
        out.print(
            f"[red]Kafka could not be read ({snap.kafka_error}): offsets and lag are missing, not zero[/]"
        )
    out.print(_topics(snap))
    out.print(_consumers(snap))
    out.print(_adapters(snap))
    for line in _summary(snap):
        out.print(line)


def _topics(snap: Snapshot) -> Table:
    topics = Table(title="Topics", show_edge=False)
    for col, justify in (
        ("topic", "left"),
        ("partitions", "right"),
        ("end offset", "right"),
        ("events/s 1 min", "right"),
    ):
        topics.add_column(col, justify=justify)  # type: ignore[arg-type]
    for t in snap.topics:
        topics.add_row(t.topic, str(len(t.partitions)), _n(t.end_total), _n(t.rate(60), 1))
    return topics


def _consumers(snap: Snapshot) -> Table:
    consumers = Table(title="Consumer groups", show_edge=False)
    for col in ("consumer", "lag", "partitions behind", "last processed"):
        consumers.add_column(col, justify="left" if col == "consumer" else "right")
    for c in snap.consumers:
        behind = sum(1 for p in c.partitions if p.lag)
        consumers.add_row(
            c.consumer, _n(c.total_lag), f"{behind}/{len(c.partitions)}", _ago(c.last_processed_at)
        )
    if not snap.consumers:
        consumers.add_row("(none yet)", "", "", "")
    return consumers


def _adapters(snap: Snapshot) -> Table:
    adapters = Table(title="Adapters (outbox)", show_edge=False)
    for col in ("origin", "last accepted", "backlog"):
        adapters.add_column(col, justify="right" if col == "backlog" else "left")
    for a in snap.outbox.adapters:
        adapters.add_row(a.origin, _ago(a.last_accepted), _n(a.backlog))
    adapters.add_row(
        "[bold]all", f"oldest pending {_ago(snap.outbox.oldest_pending)}", f"[bold]{_n(snap.outbox.backlog)}"
    )
    return adapters


def _summary(snap: Snapshot) -> list[str]:
    """One line each: dead letters, adapter rejections, feeds, consent, shared-view latency."""
    colour = "red" if snap.letters.open else "green"
    lines = [
        f"Dead letters: [{colour}]{snap.letters.open_messages} open[/] ({snap.letters.open} register rows) · "
        f"{snap.letters.redriven} redriven · "
        f"{snap.letters.discarded} discarded"
    ]
    if snap.rejections is None:
        lines.append("Adapter rejections: not available")
    else:
        lines.append(f"Adapter rejections: {sum(r.count for r in snap.rejections)} in total")
    if snap.feeds is None:
        lines.append("Feeds: not available")
    else:
        late = [f for f in snap.feeds if f.late_events_waiting]
        newest = max((f.built_at for f in snap.feeds if f.built_at), default=None)
        lines.append(
            f"Feeds: {len(snap.feeds)} built, newest {_ago(newest)}, {len(late)} with late events waiting"
        )
    if snap.consent is None:
        lines.append("Consent: not available")
    else:
        cs = snap.consent
        lines.append(
            f"Consent: {cs.active} active · {cs.withdrawn} withdrawn · {cs.erased} erased · "
            f"withdrawal→removal p50 {_n(cs.withdrawal_p50_ms)} ms, max {_n(cs.withdrawal_max_ms)} ms"
        )
    if snap.latency is None:
        lines.append("Shared view latency: not available")
    else:
        lines.append(
            f"Shared view latency: p50 {_n(snap.latency.p50_ms)} ms · p95 {_n(snap.latency.p95_ms)} ms "
            f"({snap.latency.samples} samples)"
        )
    return lines
