"""Inline SVG time-series charts, drawn on the server: bars for counts and money, lines for latency.

A chart is a fixed viewBox scaled by CSS; each bucket carries a <title>, so hovering shows its
figures with no script. Missing buckets (no calls) are drawn as zeros or gaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keel.dashboard.markup import Safe, h, join

W, H = 600, 160
PAD_L, PAD_R, PAD_T, PAD_B = 56, 8, 8, 22


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per bucket; None: no value (drawn as a gap)
    colour: str


def _label(t: float, step: int) -> str:
    return time.strftime("%m-%d" if step >= 86400 else "%m-%d %H:%M", time.gmtime(t))


def _frame(top: float, fmt: Callable[[float], str], buckets: Sequence[int], step: int) -> Safe:
    axis = [
        h('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#c9ced8"/>', PAD_L, H - PAD_B, W - PAD_R, H - PAD_B),
        h(
            '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#6b7280">{}</text>',
            PAD_L - 4,
            PAD_T + 9,
            fmt(top),
        ),
        h('<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#6b7280">0</text>', PAD_L - 4, H - PAD_B),
    ]
    if buckets:
        y = H - 6
        axis.append(
            h('<text x="{}" y="{}" font-size="11" fill="#6b7280">{}</text>', PAD_L, y, _label(buckets[0], step))
        )
        axis.append(
            h(
                '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#6b7280">{}</text>',
                W - PAD_R,
                y,
                _label(buckets[-1], step),
            )
        )
    return join(axis)


def chart(
    title: str,
    buckets: Sequence[int],
    step: int,
    series: Sequence[Series],
    fmt: Callable[[float], str],
    *,
    bars: bool,
) -> Safe:
    """One chart: `buckets` are the bucket starts (unix s), each series has one value per bucket."""
    n = max(1, len(buckets))
    top = max((v for s in series for v in s.values if v is not None), default=0.0) or 1.0
    width = (W - PAD_L - PAD_R) / n
    plot_h = H - PAD_T - PAD_B

    def y(v: float) -> float:
        return round(H - PAD_B - plot_h * v / top, 1)

    marks: list[Safe] = []
    for k, s in enumerate(series):
        if bars:
            bar_w = max(0.5, width / len(series) - 0.5)
            for i, v in enumerate(s.values):
                if v:
                    x = round(PAD_L + i * width + k * (width / len(series)), 1)
                    tip = f"{_label(buckets[i], step)} · {s.name}: {fmt(v)}"
                    marks.append(
                        h(
                            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                            x,
                            y(v),
                            round(bar_w, 1),
                            round(H - PAD_B - y(v), 1),
                            s.colour,
                            tip,
                        )
                    )
        else:
            marks.append(_line(s, buckets, step, width, y, fmt))
    legend = join(h('<tspan fill="{}">■ {}</tspan> ', s.colour, s.name) for s in series)
    return h(
        '<div class="chart"><h3>{}</h3><svg viewBox="0 0 {} {}" role="img" aria-label="{}">{}{}'
        '<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text></svg></div>',
        title,
        W,
        H,
        title,
        _frame(top, fmt, buckets, step),
        join(marks),
        (W + PAD_L) // 2,
        H - 6,
        legend,
    )


def _line(
    s: Series, buckets: Sequence[int], step: int, width: float, y: Callable[[float], float], fmt: Callable[[float], str]
) -> Safe:
    """A polyline per run of buckets with values, and a dot with a tooltip on each point."""
    runs: list[list[str]] = [[]]
    dots: list[Safe] = []
    for i, v in enumerate(s.values):
        if v is None:
            runs.append([])
            continue
        x = round(PAD_L + (i + 0.5) * width, 1)
        runs[-1].append(f"{x},{y(v)}")
        tip = f"{_label(buckets[i], step)} · {s.name}: {fmt(v)}"
        dots.append(h('<circle cx="{}" cy="{}" r="2" fill="{}"><title>{}</title></circle>', x, y(v), s.colour, tip))
    lines = join(
        h('<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>', " ".join(r), s.colour)
        for r in runs
        if r
    )
    return join([lines, *dots])
