"""The dynamic processing check: run the image as a processing job with the given inputs.

SageMaker runs ``docker run [--entrypoint ContainerEntrypoint] IMAGE [ContainerArguments]``
with each input at its ``LocalPath``, ``/opt/ml/config/processingjobconfig.json`` and
``resourceconfig.json`` written, and uploads each output's ``LocalPath`` at the end.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.check import model
from shipyard.check.model import CheckResult, Status
from shipyard.check.options import CheckOptions
from shipyard.check.sandbox import Sandbox
from shipyard.contract import processing_resource_config, write_json
from shipyard.contract.env import PROCESSING_JOB_NAME
from shipyard.runtimes.base import Mount

__all__ = ["check_processing"]

HOSTNAME = "algo-1"
CONFIG_DIR = "/opt/ml/config"
OUTPUT_DIR = "/opt/ml/output"


def _job_config(name: str, options: CheckOptions, image: str) -> dict[str, object]:
    return {
        "ProcessingJobName": name,
        "AppSpecification": {
            "ImageUri": image,
            **({"ContainerEntrypoint": list(options.processing_entrypoint)}
               if options.processing_entrypoint else {}),
            **({"ContainerArguments": list(options.processing_arguments)}
               if options.processing_arguments else {}),
        },
        "Environment": dict(options.env),
        "ProcessingInputs": [
            {"InputName": f"input-{i + 1}", "S3Input": {
                "LocalPath": item.destination, "S3Uri": Path(item.source).absolute().as_uri(),
                "S3DataType": "S3Prefix", "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}}
            for i, item in enumerate(options.processing_inputs)],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": f"output-{i + 1}", "S3Output": {
                "LocalPath": path, "S3Uri": f"file:///dev/null/{i + 1}",
                "S3UploadMode": "EndOfJob"}}
            for i, path in enumerate(options.processing_outputs)]},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": "local", "VolumeSizeInGB": 30}},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(options.timeouts.process)},
    }


def check_processing(sandbox: Sandbox, options: CheckOptions) -> CheckResult:
    info = model.PROCESS_OUTPUTS
    name = f"shipyard-check-{sandbox.run_id}-process"
    config = sandbox.folder("process", "config")
    write_json(config / "processingjobconfig.json", _job_config(name, options, sandbox.image))
    write_json(config / "resourceconfig.json", processing_resource_config(HOSTNAME, [HOSTNAME]))
    mounts = [Mount(str(config), CONFIG_DIR, read_only=True),
              Mount(str(sandbox.folder("process", "output")), OUTPUT_DIR)]
    mounts += [Mount(str(Path(item.source).absolute()), item.destination, read_only=True)
               for item in options.processing_inputs]
    outputs: dict[str, Path] = {}
    for index, path in enumerate(options.processing_outputs):
        outputs[path] = sandbox.folder("process", "outputs", str(index + 1))
        mounts.append(Mount(str(outputs[path]), path))
    container = sandbox.start(
        "process", entrypoint=list(options.processing_entrypoint) or None,
        command=list(options.processing_arguments) or None,
        env={PROCESSING_JOB_NAME: name, **options.env}, mounts=mounts, hostname=HOSTNAME)
    state = container.wait(options.timeouts.process)
    if state is None:
        return CheckResult(info, Status.FAIL,
                           f"still running after {options.timeouts.process:g} s",
                           "Give a small fixture input, or raise --process-timeout.")
    if state.exit_code != 0:
        return CheckResult(info, Status.FAIL, container.ended(state))
    written = {path: sum(1 for p in folder.rglob("*") if p.is_file())
               for path, folder in outputs.items()}
    empty = [path for path, count in written.items() if count == 0]
    if empty:
        return CheckResult(info, Status.FAIL,
                           "exit code 0, but nothing was written to " + ", ".join(empty)
                           + ": SageMaker would upload empty outputs")
    done = ", ".join(f"{path} ({count} files)" for path, count in written.items())
    return CheckResult(info, Status.PASS,
                       f"exit code 0 after {container.elapsed():.1f} s; "
                       + (f"outputs: {done}" if done else "no --processing-output to verify"),
                       seconds=container.elapsed())
