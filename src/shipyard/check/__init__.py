"""``shipyard check IMAGE``: an image against SageMaker's container contract, in seconds.

Static checks read the image config and every layer (nothing runs); dynamic checks run the
image as SageMaker would (training, hosting, processing) on the local Docker engine and probe
it. Every check cites the rule it enforces (:data:`CHECKS`, ``docs/check.md``).

Importing this package imports neither the Docker SDK nor anything that touches the engine.
"""

from shipyard.check.model import CHECKS, CheckInfo, CheckResult, Report, Stage, Status
from shipyard.check.options import CheckOptions, Payload, ProcessingInput, Timeouts
from shipyard.check.reporters import render_json, render_junit, render_table
from shipyard.check.runner import run_checks

__all__ = [
    "CHECKS",
    "CheckInfo",
    "CheckOptions",
    "CheckResult",
    "Payload",
    "ProcessingInput",
    "Report",
    "Stage",
    "Status",
    "Timeouts",
    "render_json",
    "render_junit",
    "render_table",
    "run_checks",
]
