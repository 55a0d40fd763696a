"""The HTTP face of the control plane: SageMaker's API, CloudWatch Logs' read side, STS.

``create_app`` builds the ASGI app over a control plane; ``ApiServer`` serves it (foreground or
a thread); ``ensure_server`` finds or starts the background server of a data directory.
"""

from shipyard.api.app import create_app
from shipyard.api.server import ApiServer, ensure_server, serve, stop_server

__all__ = ["ApiServer", "create_app", "ensure_server", "serve", "stop_server"]
