"""What every SDK v3 script shares: the SDK's own log lines on standard error, as a notebook
shows them, and one result line for the test to read."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

#: The prefix of the one line of standard output the test reads.
RESULT = "SDK_V3_RESULT "


def show_logs() -> None:
    """The SDK's INFO lines (job logs, statuses), without botocore's chatter."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def report(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result, sort_keys=True, default=str), flush=True)
