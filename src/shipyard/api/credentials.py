"""The API's access keys: ``<data_dir>/credentials.json``, created with one key pair on first use.

Clients sign requests with an AWS-style key pair (SigV4, see ``shipyard.api.sigv4``), so
boto3, the AWS CLI and the SageMaker SDK work unchanged once pointed at the server with the
standard variables ``client_env`` lists. Access key ids look like AWS's (20 uppercase
alphanumerics; AWS's start ``AKIA``/``ASIA``, ours ``SYAK`` so they are never mistaken for real
ones); secrets are 40 characters, like AWS's.

The file holds secrets: it is written with mode 0600, atomically (temporary file, fsync,
rename), under an exclusive lock so concurrent ``shipyard`` commands never lose a key; a file
found readable by others is tightened back to 0600. ``KeyStore.secrets`` is a live view: a
server holding it sees keys added or removed by another process at its next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as _random
import string
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from shipyard.errors import ResourceNotFound, StorageError, ValidationError

#: How stale a served key may be: a key removed from the file stops working within this.
REFRESH_SECONDS = 1.0

__all__ = [
    "ACCESS_KEY_PREFIX",
    "CREDENTIALS_FILE",
    "AccessKey",
    "KeyStore",
    "client_env",
    "load_or_create",
    "new_access_key",
]

CREDENTIALS_FILE = "credentials.json"
ACCESS_KEY_PREFIX = "SYAK"
_ACCESS_KEY_LENGTH = 20
_SECRET_LENGTH = 40
_ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
# secrets.token_urlsafe's alphabet: no "/" or "+" to trip shells, URLs or INI files.
_SECRET_ALPHABET = string.ascii_letters + string.digits + "-_"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class AccessKey:
    """One key pair, as stored."""

    access_key_id: str
    secret_access_key: str
    created: str  # ISO 8601, UTC


def new_access_key() -> AccessKey:
    """A fresh random key pair (``secrets`` module randomness)."""
    body = "".join(
        _random.choice(_ACCESS_KEY_ALPHABET)
        for _ in range(_ACCESS_KEY_LENGTH - len(ACCESS_KEY_PREFIX))
    )
    secret = "".join(_random.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return AccessKey(ACCESS_KEY_PREFIX + body, secret, created)


def load_or_create(data_dir: str | os.PathLike[str]) -> KeyStore:
    """The key store of ``data_dir``; creates the file with one key pair when absent."""
    return KeyStore.load_or_create(data_dir)


def client_env(access_key_id: str, secret: str, url: str, region: str) -> dict[str, str]:
    """The environment that points boto3/the AWS CLI/the SageMaker SDK at a Shipyard server.

    ``AWS_ENDPOINT_URL`` needs botocore >= 1.31 (boto3 >= 1.28); older clients take
    ``endpoint_url=`` explicitly. ``AWS_ENDPOINT_URL_IAM`` is named too: SDK v3 checks every
    execution role through IAM (``shipyard.api.iam``), and a user who overrides
    ``AWS_ENDPOINT_URL`` for another service must not send those checks to AWS. So is
    ``AWS_ENDPOINT_URL_CLOUDWATCH``: the SDK's training analytics read CloudWatch metrics
    (``shipyard.api.cloudwatch``), which must come from the server that ran the job.
    """
    return {
        "AWS_ACCESS_KEY_ID": access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_IAM": url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": url,
        "AWS_DEFAULT_REGION": region,
    }


class KeyStore:
    """The key pairs in one ``credentials.json``; the first is the default."""

    def __init__(self, path: Path, keys: list[AccessKey], stamp: tuple[int, int, int]) -> None:
        self._path = path
        self._keys = keys
        self._stamp = stamp
        self._by_id = {k.access_key_id: k.secret_access_key for k in keys}
        self._checked = time.monotonic()

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> KeyStore:
        path = Path(data_dir) / CREDENTIALS_FILE
        with _storage_errors(path):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                with _locked(path):
                    # Re-checked under the lock: another process may have just created it.
                    if not path.exists():
                        _write(path, [new_access_key()])
            keys, stamp = _read(path)
        if not keys:
            raise StorageError(f"{path} holds no access keys; add one or delete the file")
        return cls(path, keys, stamp)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def keys(self) -> list[AccessKey]:
        """All key pairs, default first, as of the file's current contents."""
        self._refresh()
        return list(self._keys)

    @property
    def secrets(self) -> Mapping[str, str]:
        """Access key id -> secret: a live read-only view that follows the file."""
        return _LiveSecrets(self)

    @property
    def default(self) -> tuple[str, str]:
        """(access key id, secret) of the first key pair."""
        self._refresh()
        key = self._keys[0]
        return key.access_key_id, key.secret_access_key

    def add(self) -> tuple[str, str]:
        """Create, store and return a new key pair (access key id, secret)."""
        key = new_access_key()
        with _storage_errors(self._path), _locked(self._path):
            keys, _ = _read(self._path)
            _write(self._path, [*keys, key])
        self._refresh()
        return key.access_key_id, key.secret_access_key

    def remove(self, access_key_id: str) -> None:
        """Delete a key pair; the last one stays, or nobody could reach the server."""
        with _storage_errors(self._path), _locked(self._path):
            keys, _ = _read(self._path)
            kept = [k for k in keys if k.access_key_id != access_key_id]
            if len(kept) == len(keys):
                raise ResourceNotFound(f"Access key {access_key_id} does not exist.")
            if not kept:
                raise ValidationError(
                    f"Access key {access_key_id} is the only one; add another before removing it."
                )
            _write(self._path, kept)
        self._refresh()

    def _refresh(self) -> None:
        """Re-read the file when it changed on disk (another process added or removed keys)."""
        try:
            stamp = _stamp(os.stat(self._path))
        except OSError:
            return  # gone or unreadable for now: keep serving the keys last seen
        if stamp != self._stamp:
            try:
                keys, stamp = _read(self._path)
            except (OSError, StorageError):
                return
            if keys:
                self._keys, self._stamp = keys, stamp
                self._by_id = {k.access_key_id: k.secret_access_key for k in keys}

    def _lookup(self, access_key_id: str | None = None) -> dict[str, str]:
        # A key this store does not know is looked for on disk at once (one just added by
        # `shipyard server keys`); known keys are re-checked at most every REFRESH_SECONDS,
        # which keeps a stat off every request's path: a removed key stops working within it.
        now = time.monotonic()
        if access_key_id not in self._by_id or now - self._checked >= REFRESH_SECONDS:
            self._checked = now
            self._refresh()
        return self._by_id


class _LiveSecrets(Mapping[str, str]):
    """The store's secrets, kept in step with the file (see ``KeyStore._lookup``)."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    def __getitem__(self, access_key_id: str) -> str:
        return self._store._lookup(access_key_id)[access_key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store._lookup())

    def __len__(self) -> int:
        return len(self._store._lookup())

    def __repr__(self) -> str:
        # Never print the secrets themselves.
        return f"<secrets of {self._store.path}: {sorted(self._store._lookup())}>"


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    # Every write renames a new file into place, so the inode changes even within one mtime tick.
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read(path: Path) -> tuple[list[AccessKey], tuple[int, int, int]]:
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_mode & 0o077:
            os.fchmod(fh.fileno(), 0o600)
        raw = fh.read()
    try:
        data = json.loads(raw)
        keys = [
            AccessKey(str(k["access_key_id"]), str(k["secret_access_key"]), str(k["created"]))
            for k in data["keys"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path} is not a valid Shipyard credentials file: {exc}") from exc
    return keys, _stamp(st)


def _write(path: Path, keys: list[AccessKey]) -> None:
    document = {
        "version": _FORMAT_VERSION,
        "keys": [
            {
                "access_key_id": k.access_key_id,
                "secret_access_key": k.secret_access_key,
                "created": k.created,
            }
            for k in keys
        ],
    }
    payload = (json.dumps(document, indent=2) + "\n").encode()
    # mkstemp creates the file 0600 from the start: the secret is never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the file, serialising read-modify-write across processes."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot use credentials file {path}: {exc}") from exc
