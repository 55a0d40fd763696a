"""Each kind, declared once in ``shipyard.kinds``, against botocore's SageMaker model: the
operations, members and summaries it derives must be AWS's, or boto3 would not call them."""

from __future__ import annotations

import botocore.session
import pytest

from shipyard import kinds
from shipyard.api.sagemaker import HANDLERS

_MODEL = botocore.session.get_session().get_service_model("sagemaker")


@pytest.mark.parametrize("kind", kinds.ALL, ids=lambda k: k.key)
def test_kind_names_what_sagemaker_names(kind: kinds.Kind) -> None:
    create = _MODEL.operation_model(kind.operation("Create"))
    assert kind.name_field in create.input_shape.members
    assert kind.arn_field in create.output_shape.members
    describe = _MODEL.operation_model(kind.operation("Describe")).output_shape.members
    assert {kind.name_field, kind.arn_field} <= set(describe)
    if kind.status_field:
        assert kind.status_field in describe
    listing = _MODEL.operation_model(kind.operation("List"))
    summaries = listing.output_shape.members[kind.summaries]
    assert set(kind.summary_fields) <= set(summaries.member.members)
    assert kind.list_filters <= set(listing.input_shape.members)
    for verb, present in (("Stop", kind.stoppable), ("Delete", kind.deletable)):
        if present:
            assert kind.operation(verb) in _MODEL.operation_names
        assert (kind.operation(verb) in HANDLERS) == present


@pytest.mark.parametrize("kind", kinds.ALL, ids=lambda k: k.key)
def test_the_api_serves_every_operation_of_every_kind(kind: kinds.Kind) -> None:
    for verb in ("Create", "Describe", "List"):
        assert kind.operation(verb) in HANDLERS


def test_kinds_are_found_by_key_and_log_group() -> None:
    assert kinds.get("training") is kinds.TRAINING
    assert kinds.by_log_group("/aws/sagemaker/ProcessingJobs") is kinds.PROCESSING
    assert kinds.by_log_group("/aws/sagemaker/Endpoints/x") is None
    assert [k.key for k in kinds.JOBS] == ["training", "processing", "transform", "tuning"]
    with pytest.raises(KeyError, match="kinds: training"):
        kinds.get("labeling")


def test_arns_are_aws_shaped() -> None:
    assert (kinds.ENDPOINT_CONFIG.arn("My-Config", "us-east-1", "123")
            == "arn:aws:sagemaker:us-east-1:123:endpoint-config/my-config")
    assert kinds.TRAINING.arn("J", "eu-west-1", "1").endswith(":training-job/j")
