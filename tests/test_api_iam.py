"""IAM's read side and STS's caller identity, through real boto3 clients against a real server
on an ephemeral port (the control plane on the in-memory runtime: no job runs here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.parsers
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api import iam, query, sts
from shipyard.api.credentials import client_env
from shipyard.control import ControlPlane
from shipyard.runtimes import FakeRuntime
from shipyard.settings import Settings
from tests.support.api import REGION, Api, serving, session
from tests.support.net import unused_port

ACCOUNT = "000000000000"
DEFAULT_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ShipyardExecutionRole"
NO_RETRIES = Config(retries={"max_attempts": 1})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("iam")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0}, environ={})
    with serving(settings, ControlPlane(settings, FakeRuntime())) as served:
        yield served


def _client(api: Api, service: str, secret: str | None = None,
            access_key: str | None = None) -> Any:
    return session(access_key or api.akid, secret or api.secret).client(
        service, endpoint_url=api.url, config=NO_RETRIES)


# -- GetRole --------------------------------------------------------------------------------
def test_get_role_answers_any_role_as_a_role_the_sagemaker_services_may_assume(
        api: Api) -> None:
    role = _client(api, "iam").get_role(RoleName="ShipyardExecutionRole")["Role"]
    assert role["Arn"] == DEFAULT_ROLE
    assert (role["RoleName"], role["Path"], role["MaxSessionDuration"]) == (
        "ShipyardExecutionRole", "/", 3600)
    assert role["RoleId"] == iam.role_id(ACCOUNT, "ShipyardExecutionRole")
    assert role["RoleId"].startswith("AROA") and len(role["RoleId"]) == 21
    assert role["CreateDate"].year == 2024  # parsed as a timestamp
    # URL-encoded JSON on the wire, decoded by botocore as IAM's real answers are.
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Effect"] == "Allow" and statement["Action"] == "sts:AssumeRole"
    assert "sagemaker.amazonaws.com" in statement["Principal"]["Service"]
    other = _client(api, "iam").get_role(RoleName="AmazonSageMaker-ExecutionRole-1")["Role"]
    assert other["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/AmazonSageMaker-ExecutionRole-1"
    assert other["RoleId"] != role["RoleId"]


@pytest.mark.parametrize("name, message", [
    ("a/b", "Member must satisfy regular expression pattern: [\\w+=,.@-]+"),
    ("x" * 65, "Member must have length between 1 and 64"),
], ids=["slash", "too-long"])
def test_a_role_name_iam_refuses_is_its_validation_error(api: Api, name: str,
                                                         message: str) -> None:
    with pytest.raises(ClientError) as err:
        _client(api, "iam").get_role(RoleName=name)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"].endswith(message)


# -- SimulatePrincipalPolicy ----------------------------------------------------------------
def test_simulate_principal_policy_allows_every_action_asked(api: Api) -> None:
    actions = ["sagemaker:CreateTrainingJob", "s3:GetObject", "logs:PutLogEvents"]
    answer = _client(api, "iam").simulate_principal_policy(PolicySourceArn=DEFAULT_ROLE,
                                                           ActionNames=actions)
    assert answer["IsTruncated"] is False and "Marker" not in answer
    assert [(r["EvalActionName"], r["EvalResourceName"], r["EvalDecision"])
            for r in answer["EvaluationResults"]] == [(a, "*", "allowed") for a in actions]
    assert answer["EvaluationResults"][0]["MatchedStatements"] == []


def test_simulate_principal_policy_pages_as_sdk_v3_reads_it(api: Api) -> None:
    # SDK v3 (iam_role_resolver._simulate_denied_actions) reads every page of the paginator.
    actions = [f"sagemaker:Action{i}" for i in range(5)]
    resources = ["arn:aws:s3:::a", "arn:aws:s3:::b"]
    pages = list(_client(api, "iam").get_paginator("simulate_principal_policy").paginate(
        PolicySourceArn=DEFAULT_ROLE, ActionNames=actions, ResourceArns=resources,
        PaginationConfig={"PageSize": 3}))
    assert [len(p["EvaluationResults"]) for p in pages] == [3, 3, 3, 1]
    results = [r for p in pages for r in p["EvaluationResults"]]
    assert [(r["EvalActionName"], r["EvalResourceName"]) for r in results] == [
        (a, r) for a in actions for r in resources]
    assert {r["EvalDecision"] for r in results} == {"allowed"}


def test_simulate_principal_policy_refuses_a_bad_marker(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        _client(api, "iam").simulate_principal_policy(
            PolicySourceArn=DEFAULT_ROLE, ActionNames=["s3:GetObject"], Marker="zz")
    assert err.value.response["Error"] == {"Type": "Sender", "Code": "ValidationError",
                                           "Message": "Invalid Marker: 'zz'"}


# -- what IAM does not have here, and who may ask ------------------------------------------
def test_an_iam_action_shipyard_lacks_is_aws_invalid_action(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        _client(api, "iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err.value.response["Error"] == {
        "Type": "Sender", "Code": "InvalidAction",
        "Message": "Shipyard does not implement iam:CreateRole "
                   "(docs/api.md lists what it implements)"}


@pytest.mark.parametrize("service", ["iam", "sts"])
def test_authentication_failures_carry_the_query_services_codes(api: Api, service: str
                                                                ) -> None:
    def call(client: Any) -> Any:
        if service == "iam":
            return client.get_role(RoleName="ShipyardExecutionRole")
        return client.get_caller_identity()

    with pytest.raises(ClientError) as err:
        call(_client(api, service, secret="wrong" * 8))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as err:
        call(_client(api, service, access_key="SYAKNOSUCHKEY0000000"))
    assert err.value.response["Error"]["Code"] == "InvalidClientTokenId"


# -- STS: every key acts as the default role ------------------------------------------------
def test_sts_caller_identity_is_the_default_role_assumed(api: Api) -> None:
    identity = _client(api, "sts").get_caller_identity()
    assert identity["Account"] == ACCOUNT
    assert identity["Arn"] == (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/ShipyardExecutionRole/{api.akid}")
    role = _client(api, "iam").get_role(RoleName=identity["Arn"].split("/")[1])["Role"]
    assert role["Arn"] == DEFAULT_ROLE
    assert identity["UserId"] == f"{role['RoleId']}:{api.akid}"


def test_an_sts_action_shipyard_lacks_is_aws_invalid_action(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        _client(api, "sts").get_session_token()
    assert err.value.response["Error"]["Code"] == "InvalidAction"
    assert "sts:GetSessionToken" in err.value.response["Error"]["Message"]


def test_an_iam_action_not_signed_for_iam_is_not_iam(api: Api) -> None:
    # The scope a request is signed for picks the service, as AWS's hosts do: this one is
    # signed for "sagemaker", so STS answers it.
    status, headers, body = api.raw("/", b"Action=GetRole&Version=2010-05-08&RoleName=x",
                                    headers={"Content-Type":
                                             "application/x-www-form-urlencoded"})
    assert status == 400 and headers["content-type"] == "text/xml"
    assert sts.NAMESPACE.encode() in body and b"sts:GetRole" in body


# -- the SDKs, in a process of their own, with the environment a user exports --------------
def test_client_env_names_iam(api: Api) -> None:
    env = client_env(api.akid, api.secret, api.url, REGION)
    assert env["AWS_ENDPOINT_URL_IAM"] == api.url


def test_sdk_resolves_the_default_role_with_only_the_client_env(api: Api,
                                                                tmp_path: Path) -> None:
    """What the SDKs do to find an execution role: v2's ``Session.expand_role`` of a bare
    name (IAM GetRole), and the caller's identity turned into its role as SDK v3's
    ``iam_role_resolver`` does (STS, then GetRole), then v3's permission check."""
    pytest.importorskip("sagemaker")
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                      "      TelemetryOptOut: true\n")
    dead = f"http://127.0.0.1:{unused_port()}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        **client_env(api.akid, api.secret, api.url, REGION),
        # Isolation from this machine's own setup, not part of what a user exports.
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        # Tripwire: a request for any host but this machine fails at once.
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "NO_PROXY": "127.0.0.1,localhost",
    }
    code = """if True:
        import json, boto3, sagemaker
        boto = boto3.Session()
        arn = boto.client("sts").get_caller_identity()["Arn"]
        iam = boto.client("iam")
        role = iam.get_role(RoleName=arn.split("/")[1])["Role"]
        pages = iam.get_paginator("simulate_principal_policy").paginate(
            PolicySourceArn=role["Arn"], ActionNames=["sagemaker:CreateTrainingJob"])
        print(json.dumps({
            "expanded": sagemaker.Session(boto_session=boto).expand_role(
                "ShipyardExecutionRole"),
            "resolved": role["Arn"],
            "decisions": [r["EvalDecision"] for p in pages for r in p["EvaluationResults"]],
        }))
    """
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "expanded": DEFAULT_ROLE, "resolved": DEFAULT_ROLE, "decisions": ["allowed"]}


# -- the documents themselves -----------------------------------------------------------------
def test_errors_parse_as_botocore_reads_iam() -> None:
    model = botocore.session.get_session().get_service_model("iam")
    parsed = botocore.parsers.QueryParser().parse(
        {"body": iam.error("InvalidAction", "<no>", 400, "rid"), "headers": {},
         "status_code": 400}, model.operation_model("GetRole").output_shape)
    assert parsed["Error"] == {"Type": "Sender", "Code": "InvalidAction", "Message": "<no>"}
    assert parsed["ResponseMetadata"]["RequestId"] == "rid"


def test_query_list_members_stop_at_the_first_gap() -> None:
    params = query.parse_body(b"A.member.1=x&A.member.2=y&A.member.4=z")
    assert query.members(params, "A") == ["x", "y"]
    assert query.members(params, "B") == []
    assert iam.answer(ACCOUNT, {"Action": "SimulatePrincipalPolicy",
                                "PolicySourceArn": DEFAULT_ROLE})[0] == 400
