"""Compact terminal charts of metric series, for ``shipyard jobs metrics`` and ``shipyard
endpoints metrics``, drawn with plotext (pure Python, a dependency of the platform).

A chart is one metric: each of its series (a host, a variant) one line, time along x in
seconds, minutes or hours since the first point. Commands print it only when stdout is a
terminal, unless asked (``--chart``); without a terminal it has no colours.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import click

__all__ = ["HEIGHT", "MAX_WIDTH", "Series", "duration", "is_terminal", "render", "since_seconds",
           "wants_chart"]

#: Rows of one chart, frame and axis labels included.
HEIGHT = 14
#: Columns at most (a narrower terminal gets a narrower chart).
MAX_WIDTH = 100
_UNITS = (("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0))


@dataclass
class Series:
    """One line of a chart: ``label`` (a host, a variant) and its points, oldest first."""

    label: str
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, timestamp: float, value: float) -> None:
        self.times.append(timestamp)
        self.values.append(value)


def since_seconds(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``1d`` (or plain seconds) as seconds; ValueError otherwise."""
    text = text.strip().lower()
    for suffix, scale in _UNITS:
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    value = float(text) * factor
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive duration")
    return value


def duration(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    """A ``--since`` option's callback: ``30s``, ``10m``, ``2h``, ``1d`` or plain seconds, as
    seconds (None stays None)."""
    if value is None or isinstance(value, float):
        return value
    try:
        return since_seconds(str(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration (30s, 10m, 2h, 1d)") from None


def is_terminal() -> bool:
    """Whether stdout is a terminal (charts are drawn there by default, in colour)."""
    return sys.stdout.isatty()


def wants_chart(asked: bool | None) -> bool:
    """``--chart`` / ``--no-chart`` as given, else whether stdout is a terminal."""
    return is_terminal() if asked is None else asked


def _time_scale(span: float) -> tuple[float, str]:
    if span > 3 * 3600:
        return 3600.0, "hours"
    if span > 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def render(title: str, series: Sequence[Series], *, width: int | None = None,
           color: bool = False) -> str:
    """The chart of ``series`` under ``title``, as text (no trailing newline); empty when
    no series has a point."""
    import plotext

    drawn = [s for s in series if s.times]
    if not drawn:
        return ""
    origin = min(min(s.times) for s in drawn)
    span = max(max(s.times) for s in drawn) - origin
    scale, unit = _time_scale(span)
    columns = width or shutil.get_terminal_size((80, 24)).columns
    figure = plotext.figure
    figure.clear()
    try:
        figure.plot_size(max(40, min(MAX_WIDTH, columns)), HEIGHT)
        # "simple": coloured lines on the terminal's own background (dark or light).
        figure.theme("simple" if color else "colorless")
        labelled = len(drawn) > 1
        for one in drawn:
            signal = figure.signal([(t - origin) / scale for t in one.times], one.values,
                                   marker="braille")
            if len(one.times) > 1:
                signal.lines()
            if labelled:
                signal.label(one.label)
            figure.draw(signal)
        figure.title(title)
        start = dt.datetime.fromtimestamp(origin).strftime("%H:%M:%S")
        figure.label(f"{unit} since {start}")
        return str(figure.build().string(colorless=not color)).rstrip("\n")
    finally:
        figure.clear()
