"""KMS, the part the S3 store's SSE-KMS needs, through a real boto3 KMS client against a real
server on an ephemeral port (the control plane on the in-memory runtime)."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api import kms
from shipyard.control import ControlPlane
from shipyard.runtimes import FakeRuntime
from shipyard.settings import Settings
from tests.support.api import REGION, Api, serving, session

PREFIX = "arn:aws:kms:us-east-1:000000000000:"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("kms")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0}, environ={})
    with serving(settings, ControlPlane(settings, FakeRuntime())) as served:
        yield served


@pytest.fixture(scope="module")
def client(api: Api) -> Any:
    akid, secret = api.server.keys.default
    return session(akid, secret).client("kms", endpoint_url=api.url, region_name=REGION,
                                        config=Config(retries={"max_attempts": 1}))


def _code(call: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    return error["Code"], error.get("Message", "")


def test_a_data_key_decrypts_only_under_its_encryption_context(client: Any) -> None:
    made = client.generate_data_key(KeyId="alias/aws/s3", KeySpec="AES_256",
                                    EncryptionContext={"aws:s3:arn": "arn:aws:s3:::b/k"})
    assert len(made["Plaintext"]) == 32
    assert made["KeyId"].startswith(PREFIX + "key/")
    back = client.decrypt(CiphertextBlob=made["CiphertextBlob"],
                          EncryptionContext={"aws:s3:arn": "arn:aws:s3:::b/k"})
    assert (back["Plaintext"], back["KeyId"]) == (made["Plaintext"], made["KeyId"])
    assert _code(lambda: client.decrypt(CiphertextBlob=made["CiphertextBlob"])) == (
        "InvalidCiphertextException", "")
    tampered = bytearray(made["CiphertextBlob"])
    tampered[-1] ^= 1
    assert _code(lambda: client.decrypt(
        CiphertextBlob=bytes(tampered),
        EncryptionContext={"aws:s3:arn": "arn:aws:s3:::b/k"}))[0] == "InvalidCiphertextException"
    assert _code(lambda: client.decrypt(CiphertextBlob=b"not ours at all, not at all"))[0] == (
        "InvalidCiphertextException")


def test_the_key_is_found_by_id_arn_alias_and_alias_arn(client: Any) -> None:
    key_id = client.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["KeyId"]
    for name in (key_id, f"{PREFIX}key/{key_id}", "alias/aws/s3", f"{PREFIX}alias/aws/s3"):
        meta = client.describe_key(KeyId=name)["KeyMetadata"]
        assert (meta["KeyId"], meta["KeyState"], meta["KeyUsage"]) == (
            key_id, "Enabled", "ENCRYPT_DECRYPT")
    assert client.list_aliases()["Aliases"] == [{
        "AliasName": "alias/aws/s3", "AliasArn": f"{PREFIX}alias/aws/s3",
        "TargetKeyId": key_id}]
    assert [k["KeyId"] for k in client.list_keys()["Keys"]] == [key_id]


def test_unknown_keys_and_bad_requests_get_kms_errors(client: Any) -> None:
    assert _code(lambda: client.describe_key(KeyId="alias/mine")) == (
        "NotFoundException", f"Alias {PREFIX}alias/mine is not found.")
    missing = "11111111-2222-3333-4444-555555555555"
    assert _code(lambda: client.describe_key(KeyId=missing)) == (
        "NotFoundException", f"Key '{PREFIX}key/{missing}' does not exist")
    assert _code(lambda: client.describe_key(KeyId="nonsense")) == (
        "NotFoundException", "Invalid keyId 'nonsense'")
    assert _code(lambda: client.generate_data_key(KeyId="alias/aws/s3")) == (
        "ValidationException", "Please specify either number of bytes or key spec.")
    assert _code(lambda: client.generate_data_key(
        KeyId="alias/aws/s3", KeySpec="AES_256", NumberOfBytes=16))[0] == "ValidationException"
    assert _code(lambda: client.encrypt(KeyId="alias/aws/s3", Plaintext=b"x" * 4097))[0] == (
        "ValidationException")
    assert _code(lambda: client.create_key())[0] == "UnknownOperationException"


def test_encrypt_and_data_keys_without_plaintext(client: Any) -> None:
    sealed = client.encrypt(KeyId="alias/aws/s3", Plaintext=b"hello")
    assert client.decrypt(CiphertextBlob=sealed["CiphertextBlob"])["Plaintext"] == b"hello"
    bare = client.generate_data_key_without_plaintext(KeyId="alias/aws/s3", NumberOfBytes=16)
    assert "Plaintext" not in bare
    assert len(client.decrypt(CiphertextBlob=bare["CiphertextBlob"])["Plaintext"]) == 16


def test_the_key_is_private_and_outlives_the_server(api: Api, client: Any) -> None:
    sealed = client.encrypt(KeyId="alias/aws/s3", Plaintext=b"kept")["CiphertextBlob"]
    settings = api.server.settings
    path = Path(settings.data_dir) / "kms" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Another server on the same data directory reads the same key.
    ring = kms.KeyRing(settings.data_dir, settings.region, settings.account_id)
    opened = kms.decrypt(ring, {"CiphertextBlob": base64.b64encode(sealed).decode()})
    assert base64.b64decode(opened["Plaintext"]) == b"kept"
