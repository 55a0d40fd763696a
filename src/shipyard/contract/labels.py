"""The labels Shipyard puts on what it creates in a container engine, in one place.

Containers, networks and images are found again by label, never by name: after a restart,
on an engine shared with other work, and by whoever cleans up. SageMaker's own image labels
(``com.amazonaws.sagemaker.capabilities.*``) are in :mod:`shipyard.contract.serving`.
"""

from __future__ import annotations

#: Every container, network and image Shipyard creates carries this label (value "true"),
#: so cleanup only ever touches what is ours on a shared engine.
MANAGED_LABEL = "org.shipyard.managed"
#: Free-form scope label so a test session can clean up exactly what it made.
SCOPE_LABEL = "org.shipyard.scope"

# -- what a container belongs to ---------------------------------------------------------------
#: The kind of resource (``shipyard.kinds``' keys) and its name.
JOB_KIND_LABEL = "org.shipyard.job-kind"
JOB_NAME_LABEL = "org.shipyard.job-name"
#: One run of a job, or one deployment of an endpoint: names repeat, runs do not.
RUN_LABEL = "org.shipyard.job-uid"
#: The job's host (``algo-1``) or the endpoint's instance.
HOST_LABEL = "org.shipyard.host"
#: A cluster object's container name, where the cluster's own name for it had to be shorter
#: (a swarm service's name is a DNS label).
CONTAINER_NAME_LABEL = "org.shipyard.container"
#: On a cluster service that helps a container rather than being it (``runtimes.shipping``):
#: ``stage``, ``collect`` or ``clean``.
HELPER_LABEL = "org.shipyard.helper"
#: On a container whose mounts were shipped to its node: the volumes (JSON).
SHIPPED_LABEL = "org.shipyard.shipped"
#: The production variant an endpoint container serves.
VARIANT_LABEL = "org.shipyard.variant"
#: Containers ``shipyard check`` starts.
CHECK_LABEL = "org.shipyard.check"

# -- what an image declares --------------------------------------------------------------------
#: Capabilities an image asks for beyond the base set (comma-separated names); granted only
#: where the operator's ``container_extra_capabilities`` setting lists each.
CAPABILITIES_LABEL = "org.shipyard.capabilities"
#: Images ``shipyard build`` made: the context and recipe they came from, and what they hold.
BUILD_CONTEXT_LABEL = "org.shipyard.build.context"
BUILD_RECIPE_LABEL = "org.shipyard.build.recipe"
BUILD_RECIPE_VERSION_LABEL = "org.shipyard.build.recipe-version"
BUILD_TOOLKIT_LABEL = "org.shipyard.build.toolkit-version"
BUILD_TRAIN_LABEL = "org.shipyard.build.train"
BUILD_SERVE_LABEL = "org.shipyard.build.serve"
BUILD_CUDA_LABEL = "org.shipyard.build.cuda"
