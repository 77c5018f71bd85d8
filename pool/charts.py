"""The dashboard's charts, drawn here as SVG from `stats.series`: stacked bars (tokens by model
or account; requests and errors) and lines (latency, time to first byte). Drawn on the server,
the page needs no charting library; every bar and point carries a <title> (the browser's
tooltip), and every text from the ledger (model and account names) is escaped."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

WIDTH, PLOT_HEIGHT = 960, 220
MIN_WIDTH, MAX_WIDTH = 320, 2400
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 26
LEGEND_ROW = 20
# Series colours (the page's stylesheet may override them by class: s0, s1, ...).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac")
ERROR_COLOUR = "#e15759"


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float | None]
    colour: str = ""  # a class name: s0..s8, or "err"


def stacked_bars(
    buckets: Sequence[float], step: float, series: Sequence[Series], *, title: str, unit: str = "", width: int = WIDTH
) -> str:
    """One bar per bucket, the series stacked in the order given."""
    count = len(buckets)
    tops = [sum(s.values[i] or 0 for s in series) for i in range(count)]
    frame = _Frame(buckets, step, max(tops, default=0), title, unit, series, width)
    out = frame.open()
    slot = frame.plot_width / max(count, 1)
    bar = max(slot * 0.78, 1.0)
    for i in range(count):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            y0, y1 = frame.y(base), frame.y(base + value)
            x = LEFT + i * slot + (slot - bar) / 2
            tip = f"{_when(buckets[i], step)} · {s.label}: {_number(value)}{unit}"
            out.append(
                f'<rect class="{s.colour}" x="{x:.1f}" y="{y1:.1f}" width="{bar:.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                f'fill="{_fill(s.colour)}"><title>{escape(tip)}</title></rect>'
            )
            base += value
    return frame.close(out)


def lines(
    buckets: Sequence[float], step: float, series: Sequence[Series], *, title: str, unit: str = "", width: int = WIDTH
) -> str:
    """One line per series; a bucket without a value breaks the line."""
    count = len(buckets)
    top = max((v for s in series for v in s.values if v is not None), default=0)
    frame = _Frame(buckets, step, top, title, unit, series, width)
    out = frame.open()
    slot = frame.plot_width / max(count, 1)
    for s in series:
        points = [
            (LEFT + (i + 0.5) * slot, frame.y(v), i, v) for i, v in enumerate(s.values) if v is not None
        ]
        run: list[str] = []
        previous = -2
        for x, y, i, _ in points:
            if i != previous + 1 and len(run) > 1:
                out.append(_polyline(run, s.colour))
            if i != previous + 1:
                run = []
            run.append(f"{x:.1f},{y:.1f}")
            previous = i
        if len(run) > 1:
            out.append(_polyline(run, s.colour))
        for x, y, i, v in points:
            tip = f"{_when(buckets[i], step)} · {s.label}: {_number(v)}{unit}"
            out.append(
                f'<circle class="{s.colour}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{_fill(s.colour)}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return frame.close(out)


def colours(count: int) -> list[str]:
    return [f"s{i % len(PALETTE)}" for i in range(count)]


class _Frame:
    """Axes, grid, legend and the scale shared by both kinds of chart."""

    def __init__(
        self, buckets: Sequence[float], step: float, top: float, title: str, unit: str, series: Sequence[Series], width: int
    ) -> None:
        self.buckets, self.step, self.title, self.unit, self.series = buckets, step, title, unit, series
        self.width = min(max(width, MIN_WIDTH), MAX_WIDTH)
        # Gridlines every `tick`, a round number; about five of them.
        self.tick = nice(top / 5) if top > 0 else 0.25
        self.top = math.ceil(top / self.tick - 1e-9) * self.tick if top > 0 else 1.0
        self.plot_width = self.width - LEFT - RIGHT
        self.legend = _legend(series, self.width)
        self.height = TOP + PLOT_HEIGHT + BOTTOM + LEGEND_ROW * (max((row for row, *_ in self.legend), default=-1) + 1)
        self.empty = top <= 0

    def y(self, value: float) -> float:
        return TOP + PLOT_HEIGHT * (1 - value / self.top)

    def open(self) -> list[str]:
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.width} {self.height}" '
            f'role="img" aria-label={quoteattr(self.title)} font-family="system-ui, sans-serif" font-size="11">',
            f"<title>{escape(self.title)}</title>",
        ]
        for k in range(round(self.top / self.tick) + 1):
            value = k * self.tick
            y = self.y(value)
            out.append(f'<line class="grid" x1="{LEFT}" x2="{self.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#8884" />')
            out.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#888">{_number(value)}{escape(self.unit)}</text>')
        count = len(self.buckets)
        every = max(math.ceil(count / max(self.plot_width // 100, 2)), 1)
        slot = self.plot_width / max(count, 1)
        for i in range(0, count, every):
            x = LEFT + (i + 0.5) * slot
            label = _axis_time(self.buckets[i], self.step)
            out.append(f'<text class="axis" x="{x:.1f}" y="{TOP + PLOT_HEIGHT + 16}" text-anchor="middle" fill="#888">{escape(label)}</text>')
        if self.empty:
            out.append(
                f'<text class="empty" x="{LEFT + self.plot_width / 2:.0f}" y="{TOP + PLOT_HEIGHT / 2:.0f}" '
                'text-anchor="middle" fill="#888">no requests in this range</text>'
            )
        return out

    def close(self, out: list[str]) -> str:
        base = TOP + PLOT_HEIGHT + BOTTOM
        for row, x, s in self.legend:
            y = base + row * LEGEND_ROW + 10
            out.append(f'<rect class="{s.colour}" x="{x}" y="{y - 9}" width="10" height="10" rx="2" fill="{_fill(s.colour)}" />')
            out.append(f'<text class="legend" x="{x + 14}" y="{y}" fill="currentColor">{escape(s.label)}</text>')
        out.append("</svg>")
        return "".join(out)


def _legend(series: Sequence[Series], total: int) -> list[tuple[int, int, Series]]:
    placed: list[tuple[int, int, Series]] = []
    row, x = 0, LEFT
    for s in series:
        width = 24 + 7 * min(len(s.label), 48)
        if x + width > total - RIGHT and x > LEFT:
            row, x = row + 1, LEFT
        placed.append((row, x, s))
        x += width
    return placed


def _polyline(points: list[str], colour: str) -> str:
    return f'<polyline class="{colour}" points="{" ".join(points)}" fill="none" stroke="{_fill(colour)}" stroke-width="2" />'


def _fill(colour: str) -> str:
    if colour == "err":
        return ERROR_COLOUR
    index = int(colour[1:]) if colour[1:].isdigit() else 0
    return PALETTE[index % len(PALETTE)]


def nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) at or above `value`."""
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * power * (1 + 1e-9):
            return factor * power
    return 10 * power


def _number(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else f"{int(value)}"


def _axis_time(ts: float, step: float) -> str:
    fmt = "%b %d" if step >= 86400 else "%a %H:%M" if step > 3600 else "%H:%M"
    return time.strftime(fmt, time.localtime(ts))


def _when(ts: float, step: float) -> str:
    if step >= 86400:
        return time.strftime("%a %b %d", time.localtime(ts))
    return f"{time.strftime('%a %H:%M', time.localtime(ts))}–{time.strftime('%H:%M', time.localtime(ts + step))}"
