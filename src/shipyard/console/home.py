"""Home: how many jobs are in each status, what runs now, what failed lately and why, the
endpoints' states, and the capacity queue (what holds the machine and what waits for it, in
order) where the ledger is on."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shipyard import kinds
from shipyard.console.context import PageContext
from shipyard.console.http import Response
from shipyard.console.listing import JOB_KINDS, STATUSES
from shipyard.control import capacity
from shipyard.errors import ShipyardError

__all__ = ["page"]

RUNNING = ("InProgress", "Stopping")
SHOWN = 10


def page(ctx: PageContext) -> Response:
    counts = ctx.lister.status_counts()
    totals = {s: sum(c[s] for c in counts.values()) for s in STATUSES}
    running = ctx.lister.recent(RUNNING, SHOWN)
    failures = ctx.lister.recent(("Failed",), SHOWN)
    endpoint_states = Counter(str(r.get("EndpointStatus", "")) for r in
                              ctx.plane.list_resources(kinds.ENDPOINT.key, limit=1000))
    try:
        queue: dict[str, Any] | None = capacity.snapshot(ctx.plane.ctx)
    except ShipyardError:  # the engine does not say what the machine has, for now
        queue = None
    template = "_home.html" if ctx.request.wants_fragment else "home.html"
    return ctx.render(template, counts=counts, totals=totals, statuses=STATUSES,
                      job_kinds=JOB_KINDS, running=running, failures=failures,
                      endpoint_states=sorted(endpoint_states.items()),
                      queue=queue if queue and queue["Enabled"] else None)
