"""Charts as SVG text, drawn on the server: bars over runs, stacked bars over hours.

Every label goes through `html.escape`: a source name or a job argument is data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

# Distinct on white, readable in print; the last one is "other".
PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477",
           "#66aa00", "#b82e2e", "#316395", "#888888")


def _nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def hour_label(hour: str) -> str:
    """`12-31 08:00` -> `08:00`; midnight shows its day (`12-31`)."""
    day, _, clock = hour.partition(" ")
    return day if clock == "00:00" else clock or hour


def bar_panel(title: str, values: Sequence[float], labels: Sequence[str], *, x: float = 0,
              y: float = 0, width: float = 300, height: float = 120, color: str = PALETTE[0],
              unit: str = "") -> str:
    """One small bar chart (a `<g>`): one bar per value, left to right, with a title, the
    axis top and a tooltip (`<title>`) per bar."""
    top = _nice_max(max(values, default=0))
    plot_h = height - 30
    plot_w = width - 40
    parts = [f'<g transform="translate({x:.1f},{y:.1f})">',
             f'<text x="0" y="12" class="chart-title">{escape(title)}</text>',
             f'<text x="{width - 2:.1f}" y="12" text-anchor="end" class="chart-axis">max '
             f'{escape(_number(top))}{escape(unit)}</text>',
             f'<line x1="36" y1="{20 + plot_h:.1f}" x2="{36 + plot_w:.1f}" y2="{20 + plot_h:.1f}" '
             'stroke="#999" stroke-width="1"/>']
    if values:
        slot = plot_w / len(values)
        bar = max(min(slot * 0.8, 24), 1)
        for i, (value, label) in enumerate(zip(values, labels, strict=True)):
            h = plot_h * (value / top)
            bx = 36 + i * slot + (slot - bar) / 2
            parts.append(f'<rect x="{bx:.1f}" y="{20 + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: '
                         f'{escape(_number(value))}{escape(unit)}</title></rect>')
    else:
        parts.append(f'<text x="{36 + plot_w / 2:.1f}" y="{20 + plot_h / 2:.1f}" '
                     'text-anchor="middle" class="chart-axis">no runs</text>')
    parts.append("</g>")
    return "".join(parts)


def runs_chart(job: str, runs: Sequence[Mapping[str, float]], labels: Sequence[str]) -> str:
    """Stored, updated, rejected and duration of a job's runs (oldest left): four panels."""
    panels = [("stored", "stored", "", PALETTE[0]), ("updated", "updated", "", PALETTE[2]),
              ("rejected", "rejected", "", PALETTE[1]), ("duration", "duration", " s", PALETTE[3])]
    width, height, gap = 260, 100, 16
    body = "".join(
        bar_panel(f"{title}", [float(run.get(key, 0) or 0) for run in runs], labels,
                  x=(i % 2) * (width + gap), y=24 + (i // 2) * (height + 8), width=width,
                  height=height, color=color, unit=unit)
        for i, (title, key, unit, color) in enumerate(panels))
    total_w, total_h = 2 * width + gap, 24 + 2 * (height + 8)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {total_w} {total_h}" '
            f'width="{total_w}" height="{total_h}" role="img" aria-label="runs of {escape(job)}">'
            f'<text x="0" y="14" class="chart-heading">{escape(job)}</text>{body}</svg>')


def hourly_chart(hours: Sequence[str], series: Mapping[str, Sequence[int]], *,
                 width: int = 900, height: int = 320) -> str:
    """Articles per hour, one stacked bar per hour, one colour per source (`series`: source
    -> a count per hour, in the order of `hours`), with a legend."""
    totals = [sum(counts[i] for counts in series.values()) for i in range(len(hours))]
    top = _nice_max(max(totals, default=0))
    legend_rows = (len(series) + 3) // 4
    plot_x, plot_y = 44, 10
    plot_w, plot_h = width - plot_x - 10, height - 60 - 18 * legend_rows
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="articles per hour by source">']
    for tick in (0, 0.5, 1):
        ty = plot_y + plot_h * (1 - tick)
        parts.append(f'<line x1="{plot_x}" y1="{ty:.1f}" x2="{plot_x + plot_w}" y2="{ty:.1f}" '
                     'stroke="#ddd" stroke-width="1"/>'
                     f'<text x="{plot_x - 4}" y="{ty + 4:.1f}" text-anchor="end" class="chart-axis">'
                     f'{escape(_number(top * tick))}</text>')
    if hours:
        slot = plot_w / len(hours)
        bar = max(slot * 0.85, 1)
        label_every = max(1, round(len(hours) / 12))
        for i, hour in enumerate(hours):
            bx = plot_x + i * slot + (slot - bar) / 2
            base = float(plot_y + plot_h)
            for k, (source, counts) in enumerate(series.items()):
                if not counts[i]:
                    continue
                h = plot_h * counts[i] / top
                base -= h
                parts.append(f'<rect x="{bx:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                             f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(hour)} '
                             f'{escape(source)}: {counts[i]}</title></rect>')
            if i % label_every == 0:
                parts.append(f'<text x="{bx + bar / 2:.1f}" y="{plot_y + plot_h + 14}" '
                             f'text-anchor="middle" class="chart-axis">{escape(hour_label(hour))}</text>')
    else:
        parts.append(f'<text x="{plot_x + plot_w / 2}" y="{plot_y + plot_h / 2}" '
                     'text-anchor="middle" class="chart-axis">no articles in this range</text>')
    for k, (source, counts) in enumerate(series.items()):
        lx = plot_x + (k % 4) * (plot_w / 4)
        ly = plot_y + plot_h + 34 + (k // 4) * 18
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" '
                     f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{lx + 16:.1f}" y="{ly}" '
                     f'class="chart-axis">{escape(source)} ({sum(counts)})</text>')
    parts.append("</svg>")
    return "".join(parts)
