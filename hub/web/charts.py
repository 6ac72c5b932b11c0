"""Server-rendered SVG charts: a line over time, horizontal bars, monthly bars against a target pace.

Why SVG from the server rather than a JavaScript chart library: the console then runs no script at all
(its Content-Security-Policy forbids scripts), pages work and refresh without JS, the numbers a chart
draws are in the HTML the tests read, and there is no vendored bundle to keep patched. The charts the
console needs — a series over the last half hour, lag per partition — are a polyline and rectangles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from markupsafe import Markup


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def line_chart(
    points: Sequence[tuple[datetime, float]], *, title: str, unit: str, width: int = 360, height: int = 110
) -> Markup:
    """A time series as a polyline with its latest value, minimum and maximum labelled."""
    label = escape(title)
    if len(points) < 2:
        return Markup(
            f'<svg class="chart" role="img" aria-label="{label}: not enough samples yet" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><text x="8" y="{height // 2}" class="muted">'
            f"{label}: waiting for samples</text></svg>"
        )
    pad_l, pad_r, pad_t, pad_b = 8, 8, 22, 16
    t0 = points[0][0].timestamp()
    span_t = max(points[-1][0].timestamp() - t0, 1e-9)
    lo = min(v for _, v in points)
    hi = max(v for _, v in points)
    span_v = (hi - lo) or 1.0
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    coords = " ".join(
        f"{pad_l + (t.timestamp() - t0) / span_t * inner_w:.1f},{pad_t + (1 - (v - lo) / span_v) * inner_h:.1f}"
        for t, v in points
    )
    latest = points[-1][1]
    return Markup(
        f'<svg class="chart" role="img" aria-label="{label}: latest {_fmt(latest)} {escape(unit)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="{pad_l}" y="14" class="title">{label}</text>'
        f'<text x="{width - pad_r}" y="14" text-anchor="end" class="value">{_fmt(latest)} {escape(unit)}</text>'
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" class="axis"/>'
        f'<polyline points="{coords}" class="series"/>'
        f'<text x="{pad_l}" y="{height - 3}" class="muted">{points[0][0]:%H:%M} · min {_fmt(lo)}</text>'
        f'<text x="{width - pad_r}" y="{height - 3}" text-anchor="end" class="muted">'
        f"max {_fmt(hi)} · {points[-1][0]:%H:%M}</text></svg>"
    )


def bar_chart(
    bars: Sequence[tuple[str, float | None]],
    *,
    title: str,
    width: int = 360,
    bar_h: int = 14,
    label_w: int = 110,
    zero: str = "0",
) -> Markup:
    """Labelled horizontal bars (e.g. lag per partition); each bar's value is written beside it. A value
    None is a figure kept secret: no bar, ``x`` written, never a gap read as zero; a zero is written as
    ``zero`` (statistics pages: ``－``)."""
    label = escape(title)
    height = 22 + len(bars) * (bar_h + 4)
    top = max((v for _, v in bars if v is not None), default=0) or 1
    value_w = 70
    inner = width - label_w - value_w
    rows = []
    for i, (name, value) in enumerate(bars):
        y = 22 + i * (bar_h + 4)
        w = max(1.0, value / top * inner) if value is not None and value > 0 else 0
        shown = "x" if value is None else (zero if value == 0 else _fmt(value))
        rows.append(
            f'<text x="0" y="{y + bar_h - 3}" class="muted">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" class="bar"/>'
            f'<text x="{width}" y="{y + bar_h - 3}" text-anchor="end" class="value">{shown}</text>'
        )
    return Markup(
        f'<svg class="chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><text x="0" y="14" class="title">{label}</text>{"".join(rows)}</svg>'
    )


def month_bars(
    points: Sequence[tuple[str, float | None, bool]],
    pace: Sequence[float | None],
    *,
    title: str,
    rate: bool,
    labels: tuple[str, str, str],
    width: int = 520,
    height: int = 200,
) -> Markup:
    """Monthly values as bars with each value written above, and the target pace as a dashed step line.

    Drawn for grey print: bars are mid-grey with a black outline, the pace is black and dashed, a hidden
    month shows ``x`` and a zero ``－`` (never an empty gap that could be read as zero). ``points`` are
    (axis label, value, hidden); ``labels`` name the bars, the pace and the unit in the legend.
    """
    label = escape(title)
    pad_l, pad_r, pad_t, pad_b = 40, 8, 52, 22
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [v for _, v, _ in points if v is not None] + [p for p in pace if p is not None]
    top = max(values, default=0.0) or 1.0
    slot = inner_w / max(len(points), 1)
    base = pad_t + inner_h

    def y(v: float) -> float:
        return base - v / top * inner_h

    def text(v: float) -> str:
        return f"{v * 100:.1f}%" if rate else _fmt(v)

    parts = [
        f'<text x="0" y="14" class="title">{label}</text>',
        f'<rect x="{pad_l}" y="22" width="12" height="10" class="bar-grey"/>'
        f'<text x="{pad_l + 16}" y="31" class="muted">{escape(labels[0])}</text>',
        f'<line x1="{pad_l + 110}" y1="27" x2="{pad_l + 134}" y2="27" class="pace" stroke-dasharray="6 3"/>'
        f'<text x="{pad_l + 138}" y="31" class="muted">{escape(labels[1])}</text>',
        f'<text x="{width - pad_r}" y="31" text-anchor="end" class="muted">{escape(labels[2])}</text>',
        f'<line x1="{pad_l}" y1="{base}" x2="{width - pad_r}" y2="{base}" class="axis-dark"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" class="muted">{text(top)}</text>',
    ]
    for i, (name, value, hidden) in enumerate(points):
        x = pad_l + i * slot
        mid = x + slot / 2
        parts.append(
            f'<text x="{mid:.1f}" y="{height - 6}" text-anchor="middle" class="muted">{escape(name)}</text>'
        )
        if hidden:
            parts.append(f'<text x="{mid:.1f}" y="{base - 4}" text-anchor="middle" class="value">x</text>')
        elif value is None:
            continue  # no feed for that month
        elif value == 0:
            parts.append(f'<text x="{mid:.1f}" y="{base - 4}" text-anchor="middle" class="value">－</text>')
        else:
            top_y = y(value)
            parts.append(
                f'<rect x="{x + slot * 0.18:.1f}" y="{top_y:.1f}" width="{slot * 0.64:.1f}" '
                f'height="{base - top_y:.1f}" class="bar-grey" data-month="{escape(name)}" '
                f'data-value="{value:g}"/>'
                f'<text x="{mid:.1f}" y="{top_y - 3:.1f}" text-anchor="middle" class="value">{text(value)}</text>'
            )
        target = pace[i] if i < len(pace) else None
        if target is not None:
            parts.append(
                f'<line x1="{x:.1f}" y1="{y(target):.1f}" x2="{x + slot:.1f}" y2="{y(target):.1f}" '
                f'class="pace" stroke-dasharray="6 3" data-pace="{target:g}"/>'
            )
    return Markup(
        f'<svg class="chart month-chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )


# Fills for grey print, darkest first, each segment outlined in black; the text on the dark ones is white.
_GREYS = ("#222", "#666", "#aaa", "#ddd", "#fff", "#f4f4f4")
_LIGHT_TEXT = frozenset(_GREYS[:2])


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[tuple[str, int]]]],
    *,
    title: str,
    width: int = 520,
    bar_h: int = 22,
    label_w: int = 90,
    order: Sequence[str] = (),
) -> Markup:
    """One horizontal bar per row, split into segments (e.g. authorities by achievement class), each
    segment's count written in it and named in the legend. Segments with the same name share a grey
    across rows, darkest first in ``order`` (else as they come); grey levels with black outlines and
    written counts read the same printed in grey."""
    label = escape(title)
    present = list(dict.fromkeys(name for _, segments in rows for name, _ in segments))
    names = [n for n in order if n in present] + [n for n in present if n not in order]
    fill = {name: _GREYS[i % len(_GREYS)] for i, name in enumerate(names)}
    legend_y = 22
    legend = []
    x = 0.0
    for name in names:
        legend.append(
            f'<rect x="{x:.0f}" y="{legend_y}" width="12" height="10" fill="{fill[name]}" stroke="#000" '
            f'stroke-width="0.8"/><text x="{x + 16:.0f}" y="{legend_y + 9}" class="muted">{escape(name)}</text>'
        )
        x += 26 + sum(12 if ord(c) > 0x2FF else 7 for c in name)  # wide (CJK) and narrow letters
    top = 40
    inner = width - label_w - 4
    parts = []
    for i, (row, segments) in enumerate(rows):
        y = top + i * (bar_h + 8)
        total = sum(v for _, v in segments)
        parts.append(f'<text x="0" y="{y + bar_h - 7}" class="muted">{escape(row)}</text>')
        if not total:
            parts.append(f'<text x="{label_w}" y="{y + bar_h - 7}" class="value">－</text>')
            continue
        at = float(label_w)
        for name, value in sorted(segments, key=lambda segment: names.index(segment[0])):
            w = value / total * inner
            colour = "#fff" if fill[name] in _LIGHT_TEXT else "#000"
            parts.append(
                f'<rect x="{at:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{fill[name]}" stroke="#000" '
                f'stroke-width="0.8" data-segment="{escape(name)}" data-value="{value}"/>'
                f'<text x="{at + w / 2:.1f}" y="{y + bar_h - 7}" text-anchor="middle" fill="{colour}">'
                f"{value:,}</text>"
            )
            at += w
    height = top + len(rows) * (bar_h + 8)
    return Markup(
        f'<svg class="chart stacked-chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><text x="0" y="14" class="title">{label}</text>'
        f"{''.join(legend)}{''.join(parts)}</svg>"
    )
