"""The serving half of the in-container toolkit, behind the ``serve`` console script.

Modules, one concept each:

- :mod:`.settings`: the ``SAGEMAKER_*`` serving variables, read once into a typed object;
- :mod:`.codecs`: JSON, CSV, NPY and NPZ decoders/encoders, content-type and Accept parsing;
- :mod:`.handler`: AWS's handler pattern (``model_fn``, ``input_fn``, ``predict_fn``,
  ``output_fn``, ``transform_fn``, optional ``context``) over a user module;
- :mod:`.protocol`: a small HTTP/1.1 server on asyncio (``/ping``, ``/invocations``,
  ``/execution-parameters``);
- :mod:`.workers`: the supervisor: one listening socket, forked workers, readiness, SIGTERM drain.
- multi-model mode (``SAGEMAKER_MULTI_MODEL=true``): :mod:`.registry` (the loaded-model table
  shared by all workers, LRU and budget), :mod:`.multimodel` (one worker's models),
  :mod:`.models_api` (the ``/models`` routes), :mod:`.memory` (limits and resident size).

Standard library only (numpy is imported lazily when a codec needs it; uvloop is used when
installed). Importing this package reads nothing and starts nothing.
"""
