"""``run_checks``: every registered check against one image, in parallel where it can be.

The static read (``docker save``, a few seconds for a typical image) runs beside the
containers: the training runs (four: ``train-sigterm`` has two) start at once, the serving
containers start as soon as there is a model to serve (``--model``, or the one
``train-completes`` wrote), processing starts at once. Every check ends up in the report:
run, or skipped with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.check import model, processing, serving, training
from shipyard.check.image import DockerImages, ImageConfig
from shipyard.check.layers import read_image
from shipyard.check.model import CHECKS, CheckInfo, CheckResult, Report, Stage, Status
from shipyard.check.options import CheckOptions
from shipyard.check.plan import StagePlan, needs_filesystem, plan_stages
from shipyard.check.sandbox import Sandbox
from shipyard.check.static import ImageFacts, run_static
from shipyard.errors import RuntimeUnavailable, ShipyardError

if TYPE_CHECKING:
    import docker

__all__ = ["run_checks"]

#: Threads per image: enough for every task at once (static read, three training runs, the
#: model folder, three servers, processing, and the result wrappers).
_WORKERS = 16


def _engine() -> docker.DockerClient:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except ImportError as exc:
        raise RuntimeUnavailable("the docker package is missing: pip install "
                                 "'shipyard[platform]'") from exc
    except Exception as exc:
        raise RuntimeUnavailable(
            f"cannot reach the Docker engine ({exc}); is dockerd running and is DOCKER_HOST "
            "(or /var/run/docker.sock) reachable?") from exc
    return client


def _crashed(info: CheckInfo, exc: BaseException) -> CheckResult:
    # A check that could not run is a failure of the check run, reported like one, with
    # the cause: it must never read as a pass.
    return CheckResult(info, Status.FAIL, f"the check could not run: {type(exc).__name__}: {exc}",
                       "Fix the cause above (engine, image, fixtures) and run again.")


def _guard(infos: list[CheckInfo], work: Callable[[], list[CheckResult]]
           ) -> Callable[[], list[CheckResult]]:
    def run() -> list[CheckResult]:
        try:
            return work()
        except Exception as exc:
            return [_crashed(info, exc) for info in infos]
    return run


def run_checks(image: str, options: CheckOptions | None = None, *,
               client: docker.DockerClient | None = None) -> Report:
    """Check ``image`` (in the local engine) against the contract; never raises for a
    failing image, only for an unusable engine or a missing image."""
    from shipyard.runtimes.docker import DockerRuntime

    options = options or CheckOptions()
    started = time.monotonic()
    owns_client = client is None
    engine = client if client is not None else _engine()
    try:
        images = DockerImages(engine)
        config = images.inspect(image)
        runtime = DockerRuntime(engine)
        sandbox = Sandbox(runtime, config.id or image, labels=options.labels,
                          work_dir=options.work_dir)
        try:
            results = _run_all(images, sandbox, config, options)
        finally:
            sandbox.close()
    finally:
        if owns_client:
            engine.close()
    ordered = tuple(results[check_id] for check_id in CHECKS)
    return Report(image=image, image_id=config.id, results=ordered,
                  seconds=time.monotonic() - started)


def _run_all(images: DockerImages, sandbox: Sandbox, config: ImageConfig,
             options: CheckOptions) -> dict[str, CheckResult]:
    results: dict[str, CheckResult] = {}
    static_infos = [c for c in CHECKS.values() if c.stage is Stage.STATIC]
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="shipyard-check") as pool:
        facts_future: Future[ImageFacts] = pool.submit(
            lambda: ImageFacts(config, read_image(images.save(config.reference))))
        fs = None
        if needs_filesystem(config, options):
            try:
                fs = facts_future.result().fs
            except ShipyardError:
                fs = None
        plans = plan_stages(config, fs, options)
        dynamic = _start_dynamic(pool, sandbox, config, options, plans)
        try:
            facts = facts_future.result()
            static = run_static(facts, max_size_bytes=options.max_size_bytes)
        except Exception as exc:
            static = [_crashed(info, exc) for info in static_infos]
        for result in static:
            results[result.check.id] = result
        for future in dynamic:
            for result in future.result():
                results[result.check.id] = result
    for stage, plan in plans.items():
        for info in CHECKS.values():
            if info.stage is stage and info.id not in results:
                results[info.id] = CheckResult(info, Status.SKIP, plan.why)
    for check_id in options.skip & set(results):
        results[check_id] = CheckResult(CHECKS[check_id], Status.SKIP, "skipped with --skip")
    return results


def _start_dynamic(pool: ThreadPoolExecutor, sandbox: Sandbox, config: ImageConfig,
                   options: CheckOptions, plans: dict[Stage, StagePlan]
                   ) -> list[Future[list[CheckResult]]]:
    # Every wait below is on a future submitted earlier, so with enough workers for all of
    # them nothing can deadlock.
    futures: list[Future[list[CheckResult]]] = []

    def submit(infos: list[CheckInfo], work: Callable[[], list[CheckResult]]) -> None:
        if all(info.id in options.skip for info in infos):
            return
        futures.append(pool.submit(_guard(infos, work)))

    trained: Future[tuple[CheckResult, Path | None]] | None = None
    if plans[Stage.TRAIN].run:
        completes = trained = pool.submit(training.check_train_completes, sandbox, options)
        submit([model.TRAIN_COMPLETES], lambda: [completes.result()[0]])
        submit([model.TRAIN_FAILURE_FILE],
               lambda: [training.check_failure_file(sandbox, options)])
        submit([model.TRAIN_SIGTERM], lambda: [training.check_sigterm(sandbox, options)])
    if plans[Stage.SERVE].run:
        source = trained if options.model is None else None

        def model_dir() -> Path:
            model_path: Path | None = None
            if source is not None:
                try:
                    model_path = source.result()[1]
                except Exception:
                    model_path = None
            return serving.model_folder(sandbox, options, model_path)

        folder = pool.submit(model_dir)
        submit([model.SERVE_PING_READY, model.SERVE_INVOCATIONS, model.SERVE_SIGTERM_DRAIN],
               lambda: serving.check_main_server(sandbox, options, folder.result()))
        submit([model.SERVE_BIND_TO_PORT], lambda: [
            serving.check_bind_to_port(sandbox, options, folder.result(), config.labels)])
        submit([model.SERVE_MULTI_MODEL], lambda: [
            serving.check_multi_model(sandbox, options, folder.result(), config.labels)])
    if plans[Stage.PROCESS].run:
        submit([model.PROCESS_OUTPUTS], lambda: [processing.check_processing(sandbox, options)])
    return futures
