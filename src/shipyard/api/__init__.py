"""The HTTP face of the control plane: SageMaker's API, CloudWatch Logs' read side, STS.

``create_app`` builds the ASGI app over a control plane; ``ApiServer`` serves it (foreground or
a thread); ``ensure_server`` finds or starts the background server of a data directory.

The names below load on first use (PEP 562): the CLI imports ``shipyard.api.credentials``
for a key pair and must not load the server, the control plane and botocore's models for it.
"""

from __future__ import annotations

import typing

from shipyard._lazy import lazy_names

if typing.TYPE_CHECKING:
    from shipyard.api.app import create_app
    from shipyard.api.server import ApiServer, ensure_server, serve, stop_server

__all__ = ["ApiServer", "create_app", "ensure_server", "serve", "stop_server"]

_LAZY = {
    "ApiServer": "shipyard.api.server",
    "create_app": "shipyard.api.app",
    "ensure_server": "shipyard.api.server",
    "serve": "shipyard.api.server",
    "stop_server": "shipyard.api.server",
}

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
