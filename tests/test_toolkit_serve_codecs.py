"""Codecs, content negotiation and the handler pattern's load-time rules (pure functions, real modules)."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import EntryPointError
from shipyard.toolkit.serving import codecs
from shipyard.toolkit.serving.errors import (
    BadRequest,
    NotAcceptable,
    UnsupportedContentType,
    status_of,
)
from shipyard.toolkit.serving.handler import Handler, load_user_module
from shipyard.toolkit.serving.settings import ServeSettings


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ("application/json", "utf-8")),
        ("application/json", ("application/json", "utf-8")),
        ("Application/JSON; charset=UTF-8", ("application/json", "utf-8")),
        ("text/csv;charset=\"latin-1\"", ("text/csv", "latin-1")),
        ("application/x-npy; foo=bar", ("application/x-npy", "utf-8")),
    ],
    ids=["missing", "plain", "charset-upper", "quoted-charset", "other-param"],
)
def test_parse_content_type(header: str | None, expected: tuple[str, str]) -> None:
    assert codecs.parse_content_type(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ["application/json"]),
        ("*/*", ["application/json"]),
        ("text/csv", ["text/csv"]),
        ("text/csv;q=0.5, application/x-npy", ["application/x-npy", "text/csv"]),
        ("application/json;q=0, text/csv", ["text/csv"]),
        ("text/csv, application/json", ["text/csv", "application/json"]),
        ("text/csv;q=0.2, */*;q=0.1", ["text/csv", "application/json"]),
        ("text/csv;q=oops, application/json", ["application/json"]),
    ],
    ids=["missing", "any", "one", "q-order", "q-zero", "order-kept", "any-last", "bad-q"],
)
def test_parse_accept(header: str | None, expected: list[str]) -> None:
    assert codecs.parse_accept(header) == expected


def test_negotiate_wildcards_and_refusal() -> None:
    supported = list(codecs.ENCODERS)
    assert codecs.negotiate(["application/xml", "text/*"], supported) == "text/csv"
    assert codecs.negotiate(["application/x-npz"], supported) == "application/x-npz"
    with pytest.raises(NotAcceptable) as info:
        codecs.negotiate(["application/xml"], supported)
    assert status_of(info.value) == 406


def test_json_roundtrip_with_numpy() -> None:
    value = codecs.decode(b'[[1, 2], [3, 4]]', "application/json")
    assert isinstance(value, np.ndarray) and value.shape == (2, 2)
    assert codecs.encode(value * 2, "application/json") == b"[[2, 4], [6, 8]]"
    assert codecs.encode({"x": np.float32(1.5)}, "application/json") == b'{"x": 1.5}'


def test_csv_roundtrip() -> None:
    value = codecs.decode("1,2\n3,4\n", "text/csv")
    assert value.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert codecs.encode(value, "text/csv") == b"1.0,2.0\n3.0,4.0\n"
    assert codecs.encode([1, 2], "text/csv") == b"1\n2\n"


def test_npy_roundtrip_and_pickle_refused() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    body = codecs.encode(arr, "application/x-npy")
    assert np.array_equal(codecs.decode(body, "application/x-npy"), arr)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequest, match="object arrays are refused"):
        codecs.decode(pickled.getvalue(), "application/x-npy")


def test_npz_roundtrip() -> None:
    body = codecs.encode({"a": np.ones(3), "b": np.zeros((2, 2))}, "application/x-npz")
    out = codecs.decode(body, "application/x-npz")
    assert sorted(out) == ["a", "b"] and out["b"].shape == (2, 2)


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"{not json", "application/json", BadRequest),
        (b"\xff\xfe", "application/json", BadRequest),
        (b"1,x\n", "text/csv", BadRequest),
        (b"garbage", "application/x-npy", BadRequest),
        (b"<a/>", "application/xml", UnsupportedContentType),
    ],
    ids=["json", "utf8", "csv", "npy", "xml"],
)
def test_decode_errors(body: bytes, content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        codecs.decode(body, content_type)
    assert status_of(info.value) == {BadRequest: 400, UnsupportedContentType: 415}[error]


def test_status_of_user_errors() -> None:
    class Custom(Exception):
        status_code = 422

    assert status_of(Custom()) == 422
    assert status_of(ValueError()) == 500


def test_numpy_missing_gives_clear_error(tmp_path: Path) -> None:
    # A real interpreter where `import numpy` fails, as in a slim image without it.
    script = (
        "import sys; sys.modules['numpy'] = None\n"
        "from shipyard.toolkit.serving import codecs\n"
        "print(codecs.decode(b'[1, 2]', 'application/json'))\n"
        "try:\n    codecs.decode(b'x', 'application/x-npy')\n"
        "except Exception as e:\n    print(type(e).__name__, getattr(e, 'status_code', None), e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out[0] == "[1, 2]"
    assert out[1].startswith("MissingDependency 500 application/x-npy needs numpy")


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("user_inference")
    exec(source, module.__dict__)
    return module


def test_context_arity_rule() -> None:
    handler = Handler(_module(
        "def model_fn(model_dir, context):\n    return context.system_properties['model_dir']\n"
        "def predict_fn(data, model):\n    return [model]\n"
    ), Path("/m"), "application/json")
    handler.load()
    assert handler.model == "/m"
    assert handler.transform(b"[1]", "application/json", None, None) == (b'["/m"]', "application/json")
    with pytest.raises(EntryPointError, match="takes 3 arguments"):
        Handler(_module("def model_fn(a, b, c):\n    pass\n"), Path("/m"), "application/json")


def test_transform_fn_excludes_the_others() -> None:
    with pytest.raises(EntryPointError, match="Cannot use transform_fn"):
        Handler(_module("def transform_fn(m, d, c, a):\n    pass\ndef input_fn(d, c):\n    pass\n"),
                Path("/m"), "application/json")


def test_missing_model_fn_fails_at_load() -> None:
    handler = Handler(None, Path("/m"), "application/json")
    with pytest.raises(EntryPointError, match="model_fn"):
        handler.load()


def test_load_user_module(tmp_path: Path) -> None:
    (tmp_path / "my_entry_mod_x.py").write_text("VALUE = 7\n")
    module = load_user_module(tmp_path, "my_entry_mod_x.py")
    assert module is not None and module.VALUE == 7
    assert load_user_module(tmp_path, "absent.py") is None
    (tmp_path / "broken_mod_x.py").write_text("raise RuntimeError('nope')\n")
    with pytest.raises(EntryPointError, match="nope"):
        load_user_module(tmp_path, "broken_mod_x")


def test_settings_from_environ(tmp_path: Path) -> None:
    settings = ServeSettings.from_environ({
        "SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9000",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1", "SAGEMAKER_PROGRAM": "serve_me.py",
    })
    assert (settings.port, settings.workers, settings.timeout_s) == (9000, 3, 5.0)
    assert settings.max_payload_bytes == 1024 * 1024
    assert settings.code_dir == tmp_path / "model" / "code"
    assert settings.execution_parameters() == {
        "MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
    from shipyard.errors import ValidationError
    with pytest.raises(ValidationError, match="SAGEMAKER_MODEL_SERVER_WORKERS"):
        ServeSettings.from_environ({"SAGEMAKER_MODEL_SERVER_WORKERS": "many"})
