"""ModelTrainer (sagemaker.train) as a v3 notebook uses it: no role, no bucket, no session.

    train.py source IMAGE SOURCE_DIR   SourceCode(source_dir, entry_script="train.py")
    train.py plain IMAGE DATA_DIR      the image's own entry point, a local "training" channel
                                       (the SDK uploads it to the default bucket)
"""

from __future__ import annotations

import sys

from _common import report, show_logs


def main(mode: str, image: str, folder: str) -> None:
    show_logs()
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, InputData, SourceCode

    compute = Compute(instance_type="ml.m5.large", instance_count=1)
    if mode == "source":
        trainer = ModelTrainer(
            training_image=image, base_job_name="v3-source", compute=compute,
            source_code=SourceCode(source_dir=folder, entry_script="train.py"),
            hyperparameters={"epochs": 2})
        inputs = None
    else:
        trainer = ModelTrainer(training_image=image, base_job_name="v3-plain",
                               compute=compute)
        inputs = [InputData(channel_name="training", data_source=folder)]
    trainer.train(input_data_config=inputs, wait=True, logs=True)
    job = trainer._latest_training_job
    job.refresh()
    report({
        "job": job.training_job_name,
        "status": job.training_job_status,
        "model": job.model_artifacts.s3_model_artifacts,
        "role": job.role_arn,
        "output_path": job.output_data_config.s3_output_path,
        "channels": {c.channel_name: c.data_source.s3_data_source.s3_uri
                     for c in job.input_data_config},
        "secondary": [t.status for t in job.secondary_status_transitions],
    })


if __name__ == "__main__":
    main(*sys.argv[1:])
