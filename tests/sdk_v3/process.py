"""Processing jobs through SDK v3 (sagemaker.core.processing), outputs to the default location.

    process.py plain IMAGE INPUT_DIR       Processor: the image's own program; INPUT_DIR's
                                           folders ``first`` and ``second`` as local inputs
                                           (the SDK uploads them to the default bucket)
    process.py framework IMAGE SOURCE_DIR  FrameworkProcessor: SOURCE_DIR/prep.py, packed and
                                           uploaded by the SDK, run with ``python3``
"""

from __future__ import annotations

import sys

from _common import report, show_logs


def main(mode: str, image: str, folder: str) -> None:
    show_logs()
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.processing import FrameworkProcessor, Processor
    from sagemaker.core.shapes import (
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )

    def output(name: str, local_path: str) -> ProcessingOutput:
        # A local path where an S3 URI goes: the SDK picks <default bucket>/<job>/output/<name>.
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=local_path, local_path=local_path, s3_upload_mode="EndOfJob"))

    session = Session()
    processor: Processor
    if mode == "plain":
        processor = Processor(image_uri=image, instance_count=1, instance_type="ml.m5.large",
                              entrypoint=["python3", "/opt/program/p.py"],
                              base_job_name="v3-processing", sagemaker_session=session)
        inputs = [ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=f"{folder}/{name}", local_path=f"/opt/ml/processing/input/{name}",
            s3_data_type="S3Prefix", s3_input_mode="File")) for name in ("first", "second")]
        processor.run(inputs=inputs,
                      outputs=[output("report", "/opt/ml/processing/output/report")],
                      arguments=["--flag", "on"], wait=True, logs=True)
    else:
        processor = FrameworkProcessor(image_uri=image, command=["python3"], instance_count=1,
                                       instance_type="ml.m5.large",
                                       base_job_name="v3-framework", sagemaker_session=session)
        processor.run(code="prep.py", source_dir=folder,
                      outputs=[output("result", "/opt/ml/processing/output/result")],
                      arguments=["--rows", "3"], wait=True, logs=True)
    job = processor.latest_job
    job.refresh()
    destination = job.processing_output_config.outputs[0].s3_output.s3_uri
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    report({
        "job": job.processing_job_name,
        "status": job.processing_job_status,
        "exit_message": job.exit_message,
        "role": job.role_arn,
        "inputs": {i.input_name: i.s3_input.s3_uri for i in job.processing_inputs},
        "output": destination,
        "outputs": {key.removeprefix(prefix).lstrip("/"): session.read_s3_file(bucket, key)
                    for key in session.list_s3_files(bucket, prefix)},
    })


if __name__ == "__main__":
    main(*sys.argv[1:])
