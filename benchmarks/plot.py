"""The account-size chart of ``benchmarks/run.py``: requests per job and slot efficiency against the
account's concurrency, the runner beside the baseline, each run of a scenario a mark and their range a
bar. Plain SVG written by hand, so the benchmark needs no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 860, 360
PANEL_W, PANEL_H = 330, 250
TOP, LEFT_A, LEFT_B = 50, 70, 500
SLOT_TICKS = (1, 2, 5, 20, 50, 200)
RUNNER, BASELINE, SHARED = "#1f6fb4", "#c0392b", "#7d3c98"


@dataclass(frozen=True)
class Mark:
    """One scenario on the chart: its account, and each run's figures (a dot per run, a bar for the range)."""

    label: str
    slots: int
    runners: int
    requests: Sequence[float]
    efficiency: Sequence[float]
    baseline_requests: Sequence[float]
    baseline_efficiency: Sequence[float]


def _x(slots: float, left: int) -> float:
    return left + PANEL_W * math.log(slots) / math.log(300)


def _y_requests(value: float) -> float:  # log scale, 2 to 100 requests a job
    value = min(100.0, max(2.0, value))
    return TOP + PANEL_H * (1 - math.log(value / 2) / math.log(50))


def _y_efficiency(value: float) -> float:  # 0.80 to 1.02
    value = min(1.02, max(0.80, value))
    return TOP + PANEL_H * (1.02 - value) / 0.22


def _axes(left: int, title: str, ticks: list[tuple[float, str]], goals: list[tuple[float, str]]) -> list[str]:
    out = [
        f'<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>',
        f'<text x="{left + PANEL_W / 2}" y="{TOP - 14}" text-anchor="middle" font-weight="bold">'
        f"{title}</text>",
        f'<text x="{left + PANEL_W / 2}" y="{TOP + PANEL_H + 36}" text-anchor="middle">'
        "account slots (log scale)</text>",
    ]
    for slots in SLOT_TICKS:
        x = _x(slots, left)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP + PANEL_H}" x2="{x:.1f}" y2="{TOP + PANEL_H + 5}" stroke="#999"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{TOP + PANEL_H + 18}" text-anchor="middle">{slots}</text>')
    for y, text in ticks:
        out.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#999"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
    for y, text in goals:
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + PANEL_W}" y2="{y:.1f}" stroke="#2e7d32" '
            'stroke-dasharray="5,4"/>'
        )
        out.append(
            f'<text x="{left + PANEL_W - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#2e7d32">{text}</text>'
        )
    return out


def _series(
    x: float, values: Sequence[float], to_y: Callable[[float], float], colour: str, shape: str
) -> list[str]:
    if not values:
        return []
    ys = [to_y(v) for v in values]
    out = [f'<line x1="{x:.1f}" y1="{min(ys):.1f}" x2="{x:.1f}" y2="{max(ys):.1f}" stroke="{colour}"/>']
    for v in ys:
        if shape == "square":
            out.append(
                f'<rect x="{x - 4:.1f}" y="{v - 4:.1f}" width="8" height="8" fill="white" stroke="{colour}"/>'
            )
        elif shape == "triangle":
            out.append(
                f'<path d="M{x:.1f},{v - 5:.1f} L{x + 5:.1f},{v + 4:.1f} L{x - 5:.1f},{v + 4:.1f} Z" '
                f'fill="{colour}"/>'
            )
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{v:.1f}" r="4" fill="{colour}"/>')
    return out


def account_sizes_svg(marks: Sequence[Mark], note: str = "") -> str:
    """The chart as an SVG document."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    request_ticks = [(_y_requests(v), str(v)) for v in (2, 3, 4, 5, 10, 20, 50, 100)]
    out += _axes(LEFT_A, "HTTP requests per job", request_ticks, [(_y_requests(4), "goal 4 (shared: 5)")])
    efficiency_ticks = [(_y_efficiency(v), f"{v:.2f}") for v in (0.80, 0.85, 0.90, 0.95, 1.00)]
    out += _axes(
        LEFT_B, "slot efficiency", efficiency_ticks, [(_y_efficiency(0.95), "goal 0.95 (shared: 0.93)")]
    )
    for mark in sorted(marks, key=lambda m: (m.slots, m.runners)):
        shift = 7.0 * (mark.runners - 1)  # shared accounts stand beside the single runner's mark
        shape, colour = ("triangle", SHARED) if mark.runners > 1 else ("circle", RUNNER)
        for left, values, base, to_y in (
            (LEFT_A, mark.requests, mark.baseline_requests, _y_requests),
            (LEFT_B, mark.efficiency, mark.baseline_efficiency, _y_efficiency),
        ):
            x = _x(mark.slots, left) + shift
            out += _series(x, values, to_y, colour, shape)
            out += _series(x + 3, base, to_y, BASELINE, "square")
        if mark.runners > 1:
            y = _y_requests(min(mark.requests)) + 16
            out.append(
                f'<text x="{_x(mark.slots, LEFT_A) + shift:.1f}" y="{y:.1f}" fill="{SHARED}" '
                f'text-anchor="middle" font-size="10">{mark.runners}×</text>'
            )
    legend = [
        ("circle", RUNNER, "runner (one on the account)"),
        ("triangle", SHARED, "runners sharing the account (2× and 3×, 20 slots)"),
        ("square", BASELINE, "baseline: semaphore + /status every mean/60"),
    ]
    for i, (shape, colour, text) in enumerate(legend):
        x, y = 70 + 260 * i, HEIGHT - 22
        out += _series(x, [0.0], lambda _v, y=y: float(y), colour, shape)
        out.append(f'<text x="{x + 10}" y="{y + 4}">{text}</text>')
    if note:
        out.append(f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" fill="#555">{note}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
