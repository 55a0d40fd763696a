"""ModelBuilder (sagemaker.serve) build() and deploy() of a bring-your-own-container image,
Endpoint.invoke() (sagemaker.core.resources), then the clean-up a notebook ends with.

    deploy.py IMAGE MODEL_DIR ENDPOINT_NAME

MODEL_DIR holds model.tar.gz, uploaded to the default bucket through the SDK's session.
"""

from __future__ import annotations

import os
import sys

from _common import report, show_logs


def main(image: str, model_dir: str, endpoint_name: str) -> None:
    show_logs()
    from botocore.exceptions import ClientError
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.resources import EndpointConfig
    from sagemaker.serve import ModelBuilder

    session = Session()
    model_data = session.upload_data(f"{model_dir}/model.tar.gz", key_prefix="v3-deploy")
    # model_path: the local folder ModelBuilder makes (default /tmp/sagemaker/model-builder/).
    builder = ModelBuilder(s3_model_data_url=model_data, image_uri=image,
                           instance_type="ml.m5.large", sagemaker_session=session,
                           model_path=os.path.abspath("model-builder"))
    model = builder.build()
    endpoint = builder.deploy(endpoint_name=endpoint_name, initial_instance_count=1)
    answer = endpoint.invoke(body=b"1,2,3", content_type="text/csv", accept="application/json",
                             custom_attributes="from=v3")
    result = {
        "model_data": model_data,
        "model": model.model_name,
        "role": model.execution_role_arn,
        "image": model.primary_container.image,
        "endpoint": endpoint.endpoint_name,
        "status": endpoint.endpoint_status,
        "answer": answer.body.read().decode(),
        "content_type": answer.content_type,
        "custom_attributes": answer.custom_attributes,
        "variant": answer.invoked_production_variant,
    }
    config_name = endpoint.endpoint_config_name
    endpoint.delete()
    endpoint.wait_for_delete()
    EndpointConfig.get(endpoint_config_name=config_name).delete()
    model.delete()
    client = session.sagemaker_client
    still_there = {
        "endpoint": lambda: client.describe_endpoint(EndpointName=endpoint_name),
        "endpoint_config": lambda: client.describe_endpoint_config(
            EndpointConfigName=config_name),
        "model": lambda: client.describe_model(ModelName=model.model_name),
    }
    gone = {}
    for kind, describe in still_there.items():
        try:
            describe()
            gone[kind] = False
        except ClientError:
            gone[kind] = True
    result["deleted"] = gone
    result["endpoint_config"] = config_name
    report(result)


if __name__ == "__main__":
    main(*sys.argv[1:])
