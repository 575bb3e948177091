"""Charts as inline SVG, generated in Python (no JavaScript, no CDN, no network).

Every chart is a ``<svg class="chart" data-chart="KIND">`` with a ``<title>`` per mark (the browser shows it as a
tooltip) and text labels for the numbers, so the charts are readable without colour and testable from the DOM.
"""
from __future__ import annotations

from datetime import date
from xml.sax.saxutils import escape

from markupsafe import Markup

PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
GRID = "#e5e7eb"
TEXT = "#374151"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _e(s) -> str:
    return escape(str(s), {'"': "&quot;"})


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return f"{v:,}"


def _svg(kind: str, width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{_e(kind)}" role="img" aria-label="{_e(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<title>{_e(label)}</title>{"".join(body)}</svg>')


def empty(kind: str, label: str, width: int = 640, height: int = 60) -> Markup:
    return _svg(kind, width, height, [f'<text x="8" y="{height // 2}" {FONT} fill="#6b7280">no data yet</text>'],
                label)


def hbars(kind: str, label: str, rows: list[tuple], width: int = 640, bar_h: int = 22, label_w: int = 150,
          colors: tuple[str, ...] = PALETTE, max_value: float | None = None, text_w: int = 230) -> Markup:
    """Horizontal bars: ``(label, value, text shown after the bar[, colour])``. The funnel, rates."""
    if not rows:
        return empty(kind, label, width)
    top = max_value if max_value else max((r[1] for r in rows), default=0) or 1
    plot_w = width - label_w - text_w
    body = []
    for i, row in enumerate(rows):
        name, value, text = row[:3]
        y = 6 + i * (bar_h + 6)
        w = 0 if not value else max(1.0, plot_w * float(value) / top)
        color = row[3] if len(row) > 3 else colors[i % len(colors)]
        body.append(
            f'<g class="bar" data-label="{_e(name)}" data-value="{_e(value)}">'
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" {FONT} fill="{TEXT}">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" fill="{color}">'
            f'<title>{_e(name)}: {_e(text)}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}" {FONT} fill="{TEXT}">{_e(text)}</text></g>')
    return _svg(kind, width, 12 + len(rows) * (bar_h + 6), body, label)


def columns(kind: str, label: str, days: list[date], series: list[tuple[str, dict[date, int]]], width: int = 720,
            height: int = 200, colors: tuple[str, ...] = PALETTE, stacked: bool = True) -> Markup:
    """Columns per day, one colour per series (stacked), with a legend, a y axis and first/last day labels."""
    if not days or not any(any(s.values()) for _, s in series):
        return empty(kind, label, width)
    left, bottom, top_pad = 44, 22, 22
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    totals = [sum(s.get(d, 0) for _, s in series) if stacked else max(s.get(d, 0) for _, s in series) for d in days]
    top = max(totals) or 1
    step = plot_w / len(days)
    bw = max(1.0, step * 0.8)
    body = [f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 8}" y2="{top_pad + plot_h}" stroke="{GRID}"/>',
            f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end" {FONT} fill="{TEXT}">{_fmt(top)}</text>',
            f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" {FONT} fill="{TEXT}">0</text>']
    for i, (name, _) in enumerate(series):
        body.append(f'<rect x="{left + i * 120}" y="4" width="10" height="10" fill="{colors[i % len(colors)]}"/>'
                    f'<text x="{left + i * 120 + 14}" y="13" {FONT} fill="{TEXT}">{_e(name)}</text>')
    sw = bw if stacked else bw / len(series)  # side by side when not stacked
    for j, d in enumerate(days):
        x0 = left + j * step + (step - bw) / 2
        base = top_pad + plot_h
        for i, (name, s) in enumerate(series):
            v = s.get(d, 0)
            if not v:
                continue
            h = plot_h * v / top
            y = base - h if stacked else top_pad + plot_h - h
            x = x0 if stacked else x0 + i * sw
            body.append(f'<rect class="col" data-day="{d.isoformat()}" data-series="{_e(name)}" data-value="{v}" '
                        f'x="{x:.1f}" y="{y:.1f}" width="{sw:.1f}" height="{h:.1f}" fill="{colors[i % len(colors)]}">'
                        f'<title>{d.isoformat()} {_e(name)}: {v:,}</title></rect>')
            if stacked:
                base -= h
    body.append(f'<text x="{left}" y="{height - 6}" {FONT} fill="{TEXT}">{days[0].isoformat()}</text>')
    body.append(f'<text x="{width - 8}" y="{height - 6}" text-anchor="end" {FONT} fill="{TEXT}">'
                f'{days[-1].isoformat()}</text>')
    return _svg(kind, width, height, body, label)


def histogram(kind: str, label: str, bars: list[tuple[str, int]], width: int = 720, height: int = 180,
              color: str = PALETTE[0]) -> Markup:
    """Vertical bars with a label under each (the latency buckets). Empty bars at both ends are left out."""
    if not bars or not any(v for _, v in bars):
        return empty(kind, label, width)
    first = next(i for i, (_, v) in enumerate(bars) if v)
    last = max(i for i, (_, v) in enumerate(bars) if v)
    bars = bars[max(0, first - 1):last + 2]
    left, bottom, top_pad = 8, 34, 16
    plot_w, plot_h = width - 2 * left, height - bottom - top_pad
    top = max(v for _, v in bars) or 1
    step = plot_w / len(bars)
    body = []
    for i, (name, v) in enumerate(bars):
        h = plot_h * v / top
        x = left + i * step + step * 0.1
        body.append(f'<g class="bar" data-label="{_e(name)}" data-value="{v}">'
                    f'<rect x="{x:.1f}" y="{top_pad + plot_h - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
                    f'fill="{color}"><title>{_e(name)}: {v:,}</title></rect>'
                    f'<text x="{x + step * 0.4:.1f}" y="{top_pad + plot_h - h - 3:.1f}" text-anchor="middle" '
                    f'{FONT} fill="{TEXT}">{_fmt(v) if v else ""}</text>'
                    f'<text x="{x + step * 0.4:.1f}" y="{height - bottom + 14}" text-anchor="middle" {FONT} '
                    f'fill="{TEXT}">{_e(name)}</text></g>')
    return _svg(kind, width, height, body, label)


def meter(kind: str, label: str, used: float, limit: float | None, width: int = 180, height: int = 14) -> Markup:
    """A small gauge of ``used`` against ``limit`` (red above 90%)."""
    share = min(1.0, used / limit) if limit else 0.0
    color = "#dc2626" if share >= 0.9 else "#f59e0b" if share >= 0.7 else "#16a34a"
    text = f"{_fmt(used)} / {_fmt(limit) if limit else '∞'}"
    body = [f'<rect x="0" y="0" width="{width}" height="{height}" rx="3" fill="{GRID}"/>',
            f'<rect x="0" y="0" width="{width * share:.1f}" height="{height}" rx="3" fill="{color}">'
            f'<title>{_e(label)}: {_e(text)}</title></rect>']
    return _svg(kind, width, height, body, f"{label}: {text}")
