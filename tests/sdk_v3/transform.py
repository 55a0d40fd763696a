"""Batch transform through SDK v3: a model from ModelBuilder.build() (no endpoint), then
sagemaker.core's Transformer; the output is read back from the store with the SDK's session.

    transform.py IMAGE MODEL_DIR INPUT_DIR

MODEL_DIR holds model.tar.gz; INPUT_DIR the files to transform (uploaded to the default
bucket through the SDK's session).
"""

from __future__ import annotations

import os
import sys

from _common import report, show_logs


def main(image: str, model_dir: str, input_dir: str) -> None:
    show_logs()
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.transformer import Transformer
    from sagemaker.serve import ModelBuilder

    session = Session()
    model_data = session.upload_data(f"{model_dir}/model.tar.gz", key_prefix="v3-transform/model")
    data = session.upload_data(input_dir, key_prefix="v3-transform/input")
    model = ModelBuilder(s3_model_data_url=model_data, image_uri=image,
                         instance_type="ml.m5.large", sagemaker_session=session,
                         model_path=os.path.abspath("model-builder")).build()
    transformer = Transformer(model_name=model.model_name, instance_count=1,
                              instance_type="ml.m5.large", strategy="SingleRecord",
                              assemble_with="Line", accept="application/json",
                              sagemaker_session=session)
    transformer.transform(data, content_type="text/csv", split_type="Line", wait=True,
                          logs=True)
    job = transformer.latest_transform_job
    job.refresh()
    bucket, _, prefix = transformer.output_path.removeprefix("s3://").partition("/")
    outputs = {key.removeprefix(prefix).lstrip("/"): session.read_s3_file(bucket, key)
               for key in session.list_s3_files(bucket, prefix)}
    transformer.delete_model()
    report({
        "job": job.transform_job_name,
        "status": job.transform_job_status,
        "model": model.model_name,
        "input": data,
        "output_path": transformer.output_path,
        "outputs": outputs,
    })


if __name__ == "__main__":
    main(*sys.argv[1:])
