"""Blocks this interpreter's network except loopback (tests/support/offline.py); each refused
attempt is appended to the file ``OFFLINE_LOG`` names."""

import os
import sys

from offline_guard import hook


def _append(line: str) -> None:
    path = os.environ.get("OFFLINE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


sys.addaudithook(hook(_append))
