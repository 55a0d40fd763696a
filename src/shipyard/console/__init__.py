"""The web console: server-rendered pages over the control plane, on the API's port under
``/console`` (docs/console.md).

``Console`` is the ASGI app the API's app mounts; ``login_link`` is the one-time URL that
``shipyard server status`` prints.
"""

from shipyard.console.app import PREFIX, Console
from shipyard.console.auth import login_link

__all__ = ["PREFIX", "Console", "login_link"]
