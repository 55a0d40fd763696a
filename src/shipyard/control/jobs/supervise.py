"""``python -m shipyard.control.jobs.supervise KIND NAME SETTINGS_JSON``: a detached supervisor.

The CLI starts one per job in its own session, so the job is driven to the end even when the
command that created it exits or is interrupted.
"""

from __future__ import annotations

import json
import logging
import sys

from shipyard.control.context import Context, runtime_for
from shipyard.control.jobs.registry import JOB_KINDS
from shipyard.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m shipyard.control.jobs.supervise KIND NAME SETTINGS_JSON",
              file=sys.stderr)
        return 2
    kind, name, raw = args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.load(json.loads(raw))
    ctx = Context.build(settings, runtime_for(settings))
    if kind not in JOB_KINDS:
        print(f"unknown job kind {kind!r} (kinds: {', '.join(JOB_KINDS)})", file=sys.stderr)
        return 2
    JOB_KINDS[kind].runner(ctx, name).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
