"""Inline SVG charts for the HTML report: no scripts, no external resources."""

from __future__ import annotations

from html import escape


def weekly_svg(weeks: list[tuple[str, dict]], title: str) -> str:
    """Grouped bars per week: issued (light) and accepted (dark)."""
    width, height, left, bottom = 420, 200, 34, 36
    if not weeks:
        return '<p class="muted">No cards in this period.</p>'
    top = max(max(w["issued"], w["accepted"]) for _, w in weeks) or 1
    slot = (width - left - 6) / len(weeks)
    bar = max(min(slot * 0.38, 28), 1.5)
    scale = (height - bottom - 10) / top
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#888"/>',
        f'<text x="{left - 4}" y="14" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>',
    ]
    label_every = max(1, len(weeks) // 8)
    for i, (week, w) in enumerate(weeks):
        x = left + i * slot + slot / 2
        for offset, name in ((-bar, "issued"), (0.0, "accepted")):
            h = w[name] * scale
            parts.append(
                f'<rect class="{name}" x="{x + offset:.1f}" '
                f'y="{height - bottom - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                f"<title>week of {week}: {w[name]} {name}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle">{week[5:]}</text>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 4}" font-size="10">week starting (MM-DD), UTC</text></svg>'
    )
    return "".join(parts)


def reasons_svg(reasons: list[tuple[str, int]], title: str) -> str:
    """Horizontal bars: overridden cards per reason."""
    if not reasons:
        return '<p class="muted">No overrides.</p>'
    row_h, label_w, width = 24, 190, 420
    height = row_h * len(reasons) + 8
    top = max(n for _, n in reasons) or 1
    scale = (width - label_w - 40) / top
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (code, n) in enumerate(reasons):
        y = 4 + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" '
            f'text-anchor="end">{escape(code[:32])}</text>'
        )
        parts.append(
            f'<rect class="reason" x="{label_w}" y="{y + 3}" '
            f'width="{max(n * scale, 1):.1f}" height="{row_h - 8}">'
            f"<title>{escape(code)}: {n}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + n * scale + 4:.1f}" y="{y + 15}" font-size="11">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
