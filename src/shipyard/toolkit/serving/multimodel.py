"""Multi-model mode, per worker: which models this process holds, loading and dropping them.

Rules (SageMaker multi-model endpoints, reference 4.2 and 4.8):

- a model is a directory (``/opt/ml/models/<name>/model`` as the platform places it); its code
  is ``<model dir>/code/<SAGEMAKER_PROGRAM>`` when present, else the image's handler module
  (``SAGEMAKER_PROGRAM`` in the image's code dir, as in single-model mode), else the defaults;
- ``model_fn(model_dir)`` etc. run as in single-model mode (:class:`.handler.Handler`);
- a load is measured (resident-set growth while the code imports and ``model_fn`` runs) and
  admitted into the shared :class:`.registry.Registry`, which unloads least-recently-used
  models to stay within the budget;
- other workers load a registered model lazily, on their first request for it, and drop
  their copy when the registry no longer lists it (checked on every request and every
  :data:`SYNC_INTERVAL_S` while idle), so an unload frees the memory of every worker.

Each model's module is imported under its own name, so two models may both ship an
``inference.py``. Sibling modules they import (``import utils``) are ordinary imports, shared by
name across the models of one worker, and dropped with the model that first imported them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib.util
import logging
import sys
import time
import uuid
from pathlib import Path, PurePosixPath
from types import ModuleType

from shipyard.errors import EntryPointError
from shipyard.toolkit.serving.handler import Handler, load_user_module
from shipyard.toolkit.serving.memory import (
    give_back_free_memory,
    resident_bytes,
    single_malloc_arena,
)
from shipyard.toolkit.serving.registry import (
    Admission,
    ModelAlreadyLoaded,
    ModelEntry,
    ModelLoadFailed,
    ModelNotFound,
    ModelTooLarge,
    Registry,
)
from shipyard.toolkit.serving.settings import ServeSettings

logger = logging.getLogger("shipyard.toolkit.serve")

#: how often an idle worker checks the registry for models to drop
SYNC_INTERVAL_S = 0.05
#: the conventional place of a model's files below ``<models root>/<name>``
MODEL_SUBDIR = "model"


@dataclasses.dataclass
class LoadedModel:
    """This worker's copy of one model."""

    handler: Handler
    load_id: str
    slot: int = -1
    cost: int = 0
    modules: tuple[str, ...] = ()  # what to drop from sys.modules with it
    path_entry: str | None = None  # the code dir this model put on sys.path


def model_dir_below(root: Path, name: str) -> Path | None:
    """``<root>/<name>/model`` if it is a directory and ``name`` stays below ``root``.

    The on-demand path: the name comes from a request header, so ``..`` and absolute names
    are refused rather than resolved.
    """
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or "\x00" in name:
        return None
    path = root.joinpath(*rel.parts, MODEL_SUBDIR)
    return path if path.is_dir() else None


def _import_model_code(code_dir: Path, program: str, tag: str) -> tuple[ModuleType, str] | None:
    """Import ``<code_dir>/<program>`` under a name unique to this load; None if absent."""
    stem = program[:-3] if program.endswith(".py") else program
    file, search = code_dir / f"{stem}.py", None
    if not file.is_file():
        file = code_dir / stem / "__init__.py"
        search = [str(code_dir / stem)]
        if not file.is_file():
            return None
    name = f"_shipyard_model_{tag}_{stem}"
    spec = importlib.util.spec_from_file_location(name, file,
                                                  submodule_search_locations=search)
    if spec is None or spec.loader is None:
        raise EntryPointError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise EntryPointError(f"importing {file} failed: {exc!r}") from exc
    return module, name


class ModelHost:
    """One worker's models, kept in step with the shared registry."""

    def __init__(self, settings: ServeSettings, registry: Registry, worker: int) -> None:
        self.settings = settings
        self.registry = registry
        self.worker = worker
        self.models: dict[str, LoadedModel] = {}
        self.entries: dict[str, ModelEntry] = {}  # the registry, as of self.generation
        self.generation = -1
        self._loading: asyncio.Lock | None = None
        self._image_module: ModuleType | None = None
        self._image_module_loaded = False
        self._timer: asyncio.TimerHandle | None = None

    # -- keeping in step -----------------------------------------------------------------------

    def sync(self) -> None:
        """Apply registry changes: drop every copy it no longer lists (or lists anew)."""
        if self.registry.generation() == self.generation:
            return
        generation, entries = self.registry.snapshot()
        dropped = [name for name, model in self.models.items()
                   if name not in entries or entries[name].load_id != model.load_id]
        for name in dropped:
            self._release(self.models.pop(name))
        if dropped:
            gc.collect()  # cyclic garbage too, and now: an unload promises freed memory
            give_back_free_memory()
            logger.info("worker %d dropped %s", self.worker, ", ".join(sorted(dropped)))
        self.entries = entries
        self.generation = generation
        self.registry.applied(self.worker, generation)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin the idle-time sync; this worker holds nothing yet."""
        single_malloc_arena()
        self.sync()

        def tick() -> None:
            try:
                self.sync()
            except Exception:
                logger.exception("worker %d: reading the model registry failed", self.worker)
            self._timer = loop.call_later(SYNC_INTERVAL_S, tick)

        self._timer = loop.call_later(SYNC_INTERVAL_S, tick)

    async def wait_applied(self, generation: int) -> None:
        """Wait until every worker has applied ``generation``: at most one request timeout
        (a worker busy in a request syncs when it returns), then go on regardless."""
        deadline = time.monotonic() + self.settings.timeout_s + 1.0
        while not self.registry.all_applied(generation) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    # -- requests ------------------------------------------------------------------------------

    def ready(self, name: str) -> Handler | None:
        """The handler for ``name`` if this worker holds it (the per-request fast path)."""
        self.sync()
        model = self.models.get(name)
        if model is None:
            return None
        self.registry.touch(model.slot)
        return model.handler

    async def resolve(self, name: str, on_demand: bool) -> Handler:
        """The handler for ``name``, loading this worker's copy if the model is registered.

        ``on_demand``: a model not registered but placed at ``<models root>/<name>/model`` is
        loaded and registered (``X-Amzn-SageMaker-Target-Model``); otherwise it is a 404.
        """
        async with self._lock():
            handler = self.ready(name)
            if handler is not None:
                return handler
            entry = self.entries.get(name)
            if entry is not None:
                model = await self._build(name, Path(entry.url), entry.load_id)
                model.slot, model.cost = entry.slot, entry.cost
                self.sync()  # it may have been unloaded while this worker was loading it
                current = self.entries.get(name)
                if current is None or current.load_id != entry.load_id:
                    self._release(model)
                    raise ModelNotFound.named(name)
                self.models[name] = model
                self.registry.touch(model.slot)
                return model.handler
            model_dir = model_dir_below(self.settings.models_root, name) if on_demand else None
            if model_dir is None:
                raise ModelNotFound.named(name)
            await self._admit(name, model_dir, adopt=True)
            return self.models[name].handler

    async def load(self, name: str, model_dir: Path) -> ModelEntry:
        """``POST /models``: load here, register, make room; 409 if the name is taken."""
        async with self._lock():
            self.sync()
            if name in self.entries:
                raise ModelAlreadyLoaded(f"Model {name} is already registered.")
            return (await self._admit(name, model_dir, adopt=False)).entry

    async def unload(self, name: str) -> ModelEntry:
        """``DELETE /models/<name>``: returns once every worker has dropped its copy."""
        entry, generation = self.registry.remove(name)
        self.sync()
        await self.wait_applied(generation)
        logger.info("model %s unloaded", name)
        return entry

    # -- loading -------------------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        # one load at a time per worker, so the memory it measures is that model's alone
        if self._loading is None:
            self._loading = asyncio.Lock()
        return self._loading

    async def _admit(self, name: str, model_dir: Path, adopt: bool) -> Admission:
        load_id = uuid.uuid4().hex
        model = await self._build(name, model_dir, load_id)
        try:
            admission = self.registry.admit(name, str(model_dir), load_id, model.cost, adopt)
        except BaseException:
            self._release(model)
            gc.collect()
            give_back_free_memory()
            raise
        entry = admission.entry
        model.load_id, model.slot = entry.load_id, entry.slot
        self.models[name] = model
        self.sync()
        if admission.evicted:
            logger.info("unloaded %s (least recently used) to make room for %s",
                        ", ".join(e.name for e in admission.evicted), name)
            await self.wait_applied(admission.generation)
        if not admission.adopted:
            logger.info("model %s loaded from %s (%.1f MiB per worker)", name, model_dir,
                        model.cost / (1024 * 1024))
        return admission

    async def _build(self, name: str, model_dir: Path, load_id: str) -> LoadedModel:
        """Import the model's code and run ``model_fn``, in a thread (``/ping`` keeps answering)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._build_sync, name, model_dir, load_id)

    def _build_sync(self, name: str, model_dir: Path, load_id: str) -> LoadedModel:
        before = resident_bytes()
        modules_before = set(sys.modules)
        model = LoadedModel(handler=Handler(None, model_dir, self.settings.default_accept),
                            load_id=load_id)
        try:
            module = self._module_for(model_dir, load_id, model)
            model.handler = Handler(module, model_dir, self.settings.default_accept)
            model.handler.system_properties["model_name"] = name
            model.handler.load()
        except MemoryError as exc:
            self._release(model, modules_before)
            raise ModelTooLarge(f"Model {name} ran out of memory while loading") from exc
        except Exception as exc:
            self._release(model, modules_before)
            logger.error("model %s failed to load", name, exc_info=exc)
            raise ModelLoadFailed(f"Model {name} failed to load: {exc}") from exc
        if model.path_entry is not None:
            code_dir = model.path_entry + "/"
            model.modules += tuple(
                key for key in set(sys.modules) - modules_before
                if str(getattr(sys.modules.get(key), "__file__", "") or "").startswith(code_dir))
        model.cost = max(0, resident_bytes() - before)
        return model

    def _module_for(self, model_dir: Path, load_id: str, model: LoadedModel) -> ModuleType | None:
        code_dir = model_dir / "code"
        program = self.settings.program
        stem = program[:-3] if program.endswith(".py") else program
        if (code_dir / f"{stem}.py").is_file() or (code_dir / stem / "__init__.py").is_file():
            # the model's own code: its sibling imports resolve in its code dir
            model.path_entry = str(code_dir)
            sys.path.insert(0, model.path_entry)
            found = _import_model_code(code_dir, program, load_id)
            if found is not None:
                module, module_name = found
                model.modules = (module_name,)
                return module
        if not self._image_module_loaded:
            self._image_module = load_user_module(self.settings.code_dir, program)
            self._image_module_loaded = True
        return self._image_module

    def _release(self, model: LoadedModel, modules_before: set[str] | None = None) -> None:
        """Forget a model: its handler, its modules, its sys.path entry."""
        names: set[str] = set(model.modules)
        if modules_before is not None and model.path_entry is not None:
            names |= {key for key in set(sys.modules) - modules_before
                      if str(getattr(sys.modules.get(key), "__file__", "") or "")
                      .startswith(model.path_entry + "/")}
        for key in names:
            sys.modules.pop(key, None)
        if model.path_entry is not None:
            try:
                sys.path.remove(model.path_entry)
            except ValueError:
                pass
        model.handler.model = None
        model.modules = ()
        model.path_entry = None
