"""The console's Jinja2 environment: templates from the package, HTML escaped everywhere,
and the few filters the pages format with (times, durations, statuses with a symbol and a
word, never colour alone)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from shipyard.console.http import quoted

__all__ = ["STATUS_SYMBOLS", "environment", "status_class"]

TEMPLATES = Path(__file__).parent / "templates"

#: Each status's symbol and tone; the word is always written next to the symbol.
STATUS_SYMBOLS: dict[str, tuple[str, str]] = {
    "InProgress": ("\u25b6", "running"), "Creating": ("\u25b6", "running"),
    "Updating": ("\u21bb", "running"), "SystemUpdating": ("\u21bb", "running"),
    "RollingBack": ("\u21ba", "warning"), "RolledBack": ("\u21ba", "warning"),
    "Stopping": ("\u25fc", "warning"),
    "Deleting": ("\u2715", "warning"), "Pending": ("\u2026", "running"),
    "Completed": ("\u2713", "ok"), "InService": ("\u2713", "ok"), "Approved": ("\u2713", "ok"),
    "Failed": ("\u2717", "bad"), "Rejected": ("\u2717", "bad"),
    "Stopped": ("\u25a0", "muted"), "OutOfService": ("\u25a0", "muted"),
    "PendingManualApproval": ("?", "warning"),
}


def status_class(status: str) -> str:
    return STATUS_SYMBOLS.get(status, ("\u2022", "muted"))[1]


def _status(status: str) -> Markup:
    symbol, tone = STATUS_SYMBOLS.get(status, ("\u2022", "muted"))
    return Markup('<span class="status status-{tone}" data-status="{status}">'
                  '<span aria-hidden="true">{symbol}</span> {status}</span>').format(
        tone=tone, status=status or "-", symbol=symbol)


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "-" if not value else str(value)
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return datetime.fromtimestamp(value, timezone.utc).isoformat()


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def _ago(value: Any) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "-"
    return _duration(time.time() - value) + " ago"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _gib(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value / 2 ** 30:.1f} GiB"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _data(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block (``</`` cannot end it)."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), auto_reload=False,
                             autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(status=_status, when=_when, iso=_iso, duration=_duration, ago=_ago,
                       number=_number, pretty=_pretty, data=_data, q=quoted,
                       tone=status_class, gib=_gib)
    return env
