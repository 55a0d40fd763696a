"""Which dynamic stages apply to an image, and why (the reason shows on skipped checks).

The user decides with ``--train`` / ``--serve`` / ``--process`` (or the processing fixtures);
otherwise the image is asked what it claims:

1. images made by ``shipyard build`` say it in their labels (``org.shipyard.build.train``,
   ``org.shipyard.build.serve``);
2. without an ENTRYPOINT, SageMaker runs ``train`` / ``serve`` from PATH: a stage applies
   when its program is there;
3. ``ENTRYPOINT ["train"]`` only trains (``serve`` would reach ``train`` too), and the
   other way round;
4. a SageMaker capability label claims serving; anything else cannot be told from outside.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from shipyard.build.recipe import RECIPE_LABEL as BUILD_RECIPE_LABEL
from shipyard.build.recipe import SERVE_LABEL as BUILD_SERVE_LABEL
from shipyard.build.recipe import TRAIN_LABEL as BUILD_TRAIN_LABEL
from shipyard.check.image import ImageConfig
from shipyard.check.layers import FileSystem
from shipyard.check.model import Stage
from shipyard.check.options import CheckOptions
from shipyard.contract.serving import CAPABILITY_LABEL_PREFIX

__all__ = ["BUILD_RECIPE_LABEL", "BUILD_SERVE_LABEL", "BUILD_TRAIN_LABEL", "StagePlan",
           "needs_filesystem", "plan_stages"]

# The labels `shipyard build` puts on its images (shipyard.build.recipe).
_FLAGS = {Stage.TRAIN: "--train", Stage.SERVE: "--serve", Stage.PROCESS: "--process"}
DYNAMIC = (Stage.TRAIN, Stage.SERVE, Stage.PROCESS)


@dataclass(frozen=True)
class StagePlan:
    run: bool
    why: str


def needs_filesystem(config: ImageConfig, options: CheckOptions) -> bool:
    """Whether :func:`plan_stages` must look at the image's files (PATH lookups)."""
    return not (options.static_only or options.explicit_stages or config.entrypoint
                or BUILD_RECIPE_LABEL in config.labels)


def plan_stages(config: ImageConfig, fs: FileSystem | None, options: CheckOptions
                ) -> dict[Stage, StagePlan]:
    if options.static_only:
        return dict.fromkeys(DYNAMIC, StagePlan(False, "--static-only"))
    plans: dict[Stage, StagePlan] = {}
    processing_fixtures = bool(options.processing_inputs or options.processing_outputs)
    if options.explicit_stages:
        asked = [_FLAGS[s] for s in DYNAMIC if getattr(options, s.value)]
        for stage in DYNAMIC:
            wanted = bool(getattr(options, stage.value))
            if stage is Stage.PROCESS and processing_fixtures and options.process is None:
                plans[stage] = StagePlan(True, "processing inputs/outputs given")
            elif wanted:
                plans[stage] = StagePlan(True, f"asked ({_FLAGS[stage]})")
            else:
                plans[stage] = StagePlan(
                    False, f"not asked (only {' '.join(asked) or 'processing'})")
        return plans
    train, serve = _infer(config, fs)
    plans[Stage.TRAIN], plans[Stage.SERVE] = train, serve
    plans[Stage.PROCESS] = (
        StagePlan(True, "processing inputs/outputs given") if processing_fixtures
        else StagePlan(False, "no --process, --processing-input or --processing-output"))
    return plans


def _infer(config: ImageConfig, fs: FileSystem | None) -> tuple[StagePlan, StagePlan]:
    labels = config.labels
    if BUILD_RECIPE_LABEL in labels:
        def by_label(label: str, what: str) -> StagePlan:
            if labels.get(label):
                return StagePlan(True, f"shipyard build image with a {what} program")
            return StagePlan(False, f"shipyard build image without a {what} program ({label})")
        return by_label(BUILD_TRAIN_LABEL, "training"), by_label(BUILD_SERVE_LABEL, "serving")
    if not config.entrypoint:
        plans = []
        for program in ("train", "serve"):
            where = fs.which(program, config.path_dirs) if fs is not None else None
            plans.append(StagePlan(True, f"no ENTRYPOINT and {program} on PATH ({where})")
                         if where else
                         StagePlan(False, f"no ENTRYPOINT and no {program} on PATH"))
        return plans[0], plans[1]
    program = posixpath.basename(config.entrypoint[0])
    if program == "train":
        return (StagePlan(True, "ENTRYPOINT is train"),
                StagePlan(False, "ENTRYPOINT is train: `serve` would start training"))
    if program == "serve":
        return (StagePlan(False, "ENTRYPOINT is serve: `train` would start the server"),
                StagePlan(True, "ENTRYPOINT is serve"))
    claims = sorted(k for k, v in labels.items()
                    if k.startswith(CAPABILITY_LABEL_PREFIX) and v == "true")
    unknown = f"cannot tell whether ENTRYPOINT {list(config.entrypoint)} "
    serve = (StagePlan(True, f"labelled {claims[0]}=true") if claims
             else StagePlan(False, unknown + "serves: pass --serve"))
    return StagePlan(False, unknown + "trains: pass --train"), serve
