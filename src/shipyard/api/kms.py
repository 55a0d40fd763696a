"""KMS, the part an S3 store needs for SSE-KMS: data keys under a key kept in the data directory.

The SageMaker SDK uploads code and repacked models with ``x-amz-server-side-encryption:
aws:kms`` (and, where a ``KmsKeyId`` is configured, that key). The embedded store
(SeaweedFS) encrypts such objects with a data key it asks a KMS for, through AWS's KMS API;
the server answers it here (``X-Amz-Target: TrentService.<Operation>``, awsJson1.1, signed
like every request), so objects stay readable across restarts of the store and the server.

One symmetric key per data directory, made on first use and kept in
``<data_dir>/kms/keys.json`` (mode 0600), with the alias ``alias/aws/s3`` (the key AWS uses
when a request names none). It is found by its id, its ARN, an alias or an alias ARN; any
other key is ``NotFoundException``, as in AWS.

Ciphertext blobs are Shipyard's own, as AWS's are AWS's: a version tag, the key's id, a
nonce, and AES-256-GCM of the plaintext with the encryption context (canonical JSON) as
associated data, so a blob decrypts only under the context it was made with
(``InvalidCiphertextException`` otherwise, as in AWS).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import ApiError, ValidationError

__all__ = ["DEFAULT_ALIAS", "HANDLERS", "TARGET_PREFIX", "KeyRing"]

TARGET_PREFIX = "TrentService"
#: The alias of the key a request that names none gets (AWS's managed key for S3).
DEFAULT_ALIAS = "alias/aws/s3"
_BLOB_TAG = b"SYK1"
_NONCE_BYTES = 12
_MAX_PLAINTEXT = 4096
_KEY_SPECS = {"AES_256": 32, "AES_128": 16}


class NotFound(ApiError):
    code = "NotFoundException"
    http_status = 400


class InvalidCiphertext(ApiError):
    code = "InvalidCiphertextException"
    http_status = 400


class IncorrectKey(ApiError):
    code = "IncorrectKeyException"
    http_status = 400


@dataclass(frozen=True)
class Key:
    key_id: str
    material: bytes
    created: float
    aliases: tuple[str, ...]


class KeyRing:
    """The data directory's KMS keys, read (or made) once."""

    def __init__(self, data_dir: Path, region: str, account_id: str) -> None:
        self._path = data_dir / "kms" / "keys.json"
        self.region = region
        self.account_id = account_id
        self._keys: list[Key] | None = None
        self._lock = threading.Lock()

    def arn(self, key: Key) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key.key_id}"

    def all(self) -> list[Key]:
        with self._lock:
            if self._keys is None:
                self._keys = self._load()
            return self._keys

    def find(self, identifier: str | None) -> Key:
        """The key ``identifier`` names (id, ARN, alias, alias ARN); None: the default."""
        wanted = identifier or DEFAULT_ALIAS
        prefix = f"arn:aws:kms:{self.region}:{self.account_id}:"
        name = wanted.removeprefix(prefix)
        for key in self.all():
            if name in (key.key_id, f"key/{key.key_id}") or name in key.aliases:
                return key
        # AWS's three messages: an alias, a key id or ARN, anything else.
        if name.startswith("alias/"):
            raise NotFound(f"Alias {prefix}{name} is not found.")
        if name.startswith("key/") or _is_uuid(name):
            raise NotFound(f"Key '{prefix}key/{name.removeprefix('key/')}' does not exist")
        raise NotFound(f"Invalid keyId '{wanted}'")

    def by_id(self, key_id: str) -> Key:
        for key in self.all():
            if key.key_id == key_id:
                return key
        raise InvalidCiphertext("The ciphertext refers to a key that does not exist here")

    def _load(self) -> list[Key]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            return [Key(k["KeyId"], base64.b64decode(k["Material"]), float(k["Created"]),
                        tuple(k.get("Aliases", ()))) for k in data["Keys"]]
        except FileNotFoundError:
            pass
        key = Key(str(uuid.uuid4()), os.urandom(32), time.time(), (DEFAULT_ALIAS,))
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._path.with_name(f".keys.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"Keys": [{"KeyId": key.key_id, "Created": key.created,
                                 "Material": base64.b64encode(key.material).decode(),
                                 "Aliases": list(key.aliases)}]}, fh)
        with contextlib.suppress(FileExistsError):
            # Another server process made one first: theirs is the key.
            os.link(tmp, self._path)
            os.unlink(tmp)
            return [key]
        os.unlink(tmp)
        return self._load()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _aead(material: bytes) -> Any:
    # cryptography is a platform dependency; imported here so the API loads without it
    # until a KMS call comes.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(material)


def _context(params: dict[str, Any]) -> bytes:
    context = params.get("EncryptionContext") or {}
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def _seal(key: Key, plaintext: bytes, params: dict[str, Any]) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    sealed: bytes = _aead(key.material).encrypt(nonce, plaintext, _context(params))
    return _BLOB_TAG + uuid.UUID(key.key_id).bytes + nonce + sealed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _blob(params: dict[str, Any], name: str) -> bytes:
    try:
        return base64.b64decode(str(params.get(name) or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"{name} is not valid base64") from exc


def _data_key_bytes(params: dict[str, Any]) -> int:
    spec, count = params.get("KeySpec"), params.get("NumberOfBytes")
    if (spec is None) == (count is None):
        raise ValidationError("Please specify either number of bytes or key spec.")
    if spec is not None:
        if spec not in _KEY_SPECS:
            raise ValidationError(f"1 validation error detected: Value '{spec}' at 'keySpec' "
                                  "failed to satisfy constraint: Member must satisfy enum "
                                  "value set: [AES_256, AES_128]")
        return _KEY_SPECS[spec]
    if not isinstance(count, int) or not 1 <= count <= 1024:
        raise ValidationError("NumberOfBytes must be between 1 and 1024")
    return count


Handler = Callable[[KeyRing, dict[str, Any]], dict[str, Any]]


def generate_data_key(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    key = ring.find(params.get("KeyId"))
    plaintext = os.urandom(_data_key_bytes(params))
    return {"KeyId": ring.arn(key), "Plaintext": _b64(plaintext),
            "CiphertextBlob": _b64(_seal(key, plaintext, params))}


def generate_data_key_without_plaintext(ring: KeyRing, params: dict[str, Any]
                                        ) -> dict[str, Any]:
    answer = generate_data_key(ring, params)
    del answer["Plaintext"]
    return answer


def encrypt(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    key = ring.find(params.get("KeyId"))
    plaintext = _blob(params, "Plaintext")
    if not 1 <= len(plaintext) <= _MAX_PLAINTEXT:
        raise ValidationError(f"Plaintext must be 1 to {_MAX_PLAINTEXT} bytes")
    return {"KeyId": ring.arn(key), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "CiphertextBlob": _b64(_seal(key, plaintext, params))}


def decrypt(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    blob = _blob(params, "CiphertextBlob")
    head = len(_BLOB_TAG) + 16 + _NONCE_BYTES
    if len(blob) <= head or not blob.startswith(_BLOB_TAG):
        raise InvalidCiphertext("The ciphertext is not one this KMS made")
    key = ring.by_id(str(uuid.UUID(bytes=blob[len(_BLOB_TAG):len(_BLOB_TAG) + 16])))
    if params.get("KeyId") and ring.find(params["KeyId"]) != key:
        raise IncorrectKey("The key ID in the request does not identify the key that "
                           "encrypted the ciphertext")
    from cryptography.exceptions import InvalidTag

    try:
        plaintext = _aead(key.material).decrypt(blob[head - _NONCE_BYTES:head], blob[head:],
                                                _context(params))
    except InvalidTag as exc:
        # A changed blob or another encryption context: AWS does not say which.
        raise InvalidCiphertext("") from exc
    return {"KeyId": ring.arn(key), "Plaintext": _b64(plaintext),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def describe_key(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    key = ring.find(params.get("KeyId"))
    return {"KeyMetadata": {
        "AWSAccountId": ring.account_id, "KeyId": key.key_id, "Arn": ring.arn(key),
        "CreationDate": key.created, "Enabled": True, "KeyState": "Enabled",
        "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "Origin": "AWS_KMS",
        "KeyManager": "AWS", "Description": "Shipyard's key for this data directory",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "MultiRegion": False}}


def list_keys(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    return {"Keys": [{"KeyId": k.key_id, "KeyArn": ring.arn(k)} for k in ring.all()],
            "Truncated": False}


def list_aliases(ring: KeyRing, params: dict[str, Any]) -> dict[str, Any]:
    prefix = f"arn:aws:kms:{ring.region}:{ring.account_id}:"
    wanted = params.get("KeyId")
    return {"Aliases": [
        {"AliasName": alias, "AliasArn": prefix + alias, "TargetKeyId": key.key_id}
        for key in ring.all() for alias in key.aliases
        if not wanted or ring.find(wanted) == key], "Truncated": False}


HANDLERS: dict[str, Handler] = {
    "Decrypt": decrypt,
    "DescribeKey": describe_key,
    "Encrypt": encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "ListAliases": list_aliases,
    "ListKeys": list_keys,
}
