"""The hosting side of the contract, as the platform sees a serving container."""

from __future__ import annotations

#: ``docker run IMAGE serve`` listens here unless told otherwise.
SERVING_PORT = 8080
SERVE_COMMAND = "serve"
PING_PATH = "/ping"
INVOCATIONS_PATH = "/invocations"
EXECUTION_PARAMETERS_PATH = "/execution-parameters"
#: Where a multi-model container finds the models the platform placed for it.
MULTI_MODEL_ROOT = "/opt/ml/models"
#: A container gets SIGTERM, then SIGKILL this many seconds later, when its instance goes.
SERVING_STOP_GRACE_SECONDS = 30.0

BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"

#: Image labels by which a serving image says what it supports (AWS's names).
BIND_TO_PORT_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
MULTI_MODEL_LABEL = "com.amazonaws.sagemaker.capabilities.multi-models"
CAPABILITY_LABEL_PREFIX = "com.amazonaws.sagemaker.capabilities."
