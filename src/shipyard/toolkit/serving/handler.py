"""AWS's handler pattern over a user module, so existing ``inference.py`` files run unchanged.

Rules (sagemaker-inference-toolkit ``transformer.py``/``default_inference_handler.py``,
reference section 4.4):

- all functions optional: ``model_fn(model_dir)``, ``input_fn(data, content_type)``,
  ``predict_fn(data, model)``, ``output_fn(prediction, accept)``,
  ``transform_fn(model, data, content_type, accept)``, ``pre_model_fn(model_dir)``,
  ``model_warmup_fn(model_dir, model)``; each may take one more parameter, ``context``
  (toolkit v1.7.0); any other arity is refused at load;
- ``transform_fn`` together with input/predict/output_fn is refused (the toolkit's ValueError);
- load order: ``pre_model_fn`` -> ``model_fn`` -> ``model_warmup_fn``;
- ``input_fn`` gets a ``str`` for JSON and CSV bodies, ``bytes`` otherwise; the content type is
  the bare media type (a ``; charset=`` parameter is applied, not passed on);
- ``output_fn`` gets the Accept header as sent (``*/*`` or missing -> the default accept);
- a result is bytes/str or ``(body, content_type)``; a generator or iterator body is streamed.

Defaults: ``input_fn``/``output_fn`` use :mod:`.codecs`; ``predict_fn`` calls ``model(data)``
(or ``model.predict(data)``); a missing ``model_fn`` is an error at load, as in AWS's toolkit.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import GeneratorType, ModuleType
from typing import Any

from shipyard.errors import EntryPointError
from shipyard.toolkit.serving import codecs
from shipyard.toolkit.serving.errors import BadRequest

BASE_ARITY = {
    "model_fn": 1,
    "input_fn": 2,
    "predict_fn": 2,
    "output_fn": 2,
    "transform_fn": 4,
    "pre_model_fn": 1,
    "model_warmup_fn": 2,
}

#: the request headers SageMaker passes through to the container (reference 4.1)
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
INFERENCE_ID = "x-amzn-sagemaker-inference-id"
TARGET_MODEL = "x-amzn-sagemaker-target-model"


class RequestProcessor:
    """MMS's per-request object: ``context.request_processor[0].get_request_properties()``."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def get_request_properties(self) -> dict[str, str]:
        """The request headers, names lower-cased."""
        return dict(self._headers)

    def get_request_property(self, name: str) -> str | None:
        """One request header, by case-insensitive name."""
        return self._headers.get(name.lower())


@dataclasses.dataclass
class Context:
    """What a handler function's optional ``context`` argument receives.

    Compatible with the MMS context AWS passes (``system_properties``, ``request_processor``),
    plus the SageMaker request headers as attributes (inference toolkit #110).
    """

    system_properties: dict[str, Any]
    request_headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def request_processor(self) -> list[RequestProcessor]:
        """One processor for the one request (AWS's batches always read index 0)."""
        return [RequestProcessor(self.request_headers)]

    @property
    def custom_attributes(self) -> str | None:
        """``X-Amzn-SageMaker-Custom-Attributes``, as sent."""
        return self.request_headers.get(CUSTOM_ATTRIBUTES)

    @property
    def inference_id(self) -> str | None:
        """``X-Amzn-SageMaker-Inference-Id``."""
        return self.request_headers.get(INFERENCE_ID)

    @property
    def target_model(self) -> str | None:
        """``X-Amzn-SageMaker-Target-Model``."""
        return self.request_headers.get(TARGET_MODEL)


def load_user_module(code_dir: Path, program: str) -> ModuleType | None:
    """Import ``program`` (``inference.py`` or ``inference``) from ``code_dir``; None if absent.

    The code dir goes first on ``sys.path`` so the module's own imports resolve there, as the
    toolkit's ``PYTHONPATH`` prepend does. Import errors are the user's: reported, not hidden.
    """
    name = program[:-3] if program.endswith(".py") else program
    if not (code_dir / f"{name}.py").is_file() and not (code_dir / name / "__init__.py").is_file():
        return None
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise EntryPointError(f"importing {code_dir / program} failed: {exc!r}") from exc


def _takes_context(name: str, fn: Callable[..., Any]) -> bool:
    """The toolkit's rule: ``context`` is passed iff the function takes one extra parameter."""
    base = BASE_ARITY[name]
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return False
    count = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    if count not in (base, base + 1):
        raise EntryPointError(f"{name} takes {count} arguments but {base} (or {base + 1} "
                              "with context) are given")
    return count == base + 1


def _is_stream(value: object) -> bool:
    return isinstance(value, (GeneratorType, Iterator)) and not isinstance(value, (bytes, str))


class Handler:
    """The user's functions (or defaults), bound to one loaded model."""

    def __init__(self, module: ModuleType | None, model_dir: Path, default_accept: str) -> None:
        self.model_dir = model_dir
        self.default_accept = default_accept
        self.system_properties: dict[str, Any] = {"model_dir": str(model_dir), "gpu_id": None}
        self.model: Any = None
        self._fns: dict[str, tuple[Callable[..., Any], bool]] = {}
        for name in BASE_ARITY:
            fn = getattr(module, name, None) if module is not None else None
            if callable(fn):
                self._fns[name] = (fn, _takes_context(name, fn))
        if "transform_fn" in self._fns and {"input_fn", "predict_fn", "output_fn"} & set(self._fns):
            raise EntryPointError(
                "Cannot use transform_fn implementation in conjunction with input_fn, "
                "predict_fn, and/or output_fn implementation"
            )
        self.wants_context = any(ctx for _, ctx in self._fns.values())

    def _call(self, name: str, context: Context | None, *args: Any) -> Any:
        fn, with_context = self._fns[name]
        if with_context:
            return fn(*args, context or Context(self.system_properties))
        return fn(*args)

    def load(self) -> None:
        """``pre_model_fn`` -> ``model_fn`` -> ``model_warmup_fn``, once per process."""
        context = Context(self.system_properties)
        model_dir = str(self.model_dir)
        if "pre_model_fn" in self._fns:
            self._call("pre_model_fn", context, model_dir)
        if "model_fn" not in self._fns:
            raise EntryPointError(
                "Please provide a model_fn implementation in the user module "
                "(none found in the code dir; see SAGEMAKER_PROGRAM)"
            )
        self.model = self._call("model_fn", context, model_dir)
        if "model_warmup_fn" in self._fns:
            self._call("model_warmup_fn", context, model_dir, self.model)

    def context_for(self, headers: Mapping[str, str]) -> Context | None:
        """A per-request context, built only when some function asks for one."""
        if not self.wants_context:
            return None
        return Context(self.system_properties, dict(headers))

    def transform(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context | None
    ) -> tuple[Any, str]:
        """Run one request: ``(body bytes | str | iterator, response content type)``."""
        media, charset = codecs.parse_content_type(content_type)
        data: bytes | str = body
        if media in codecs.TEXT_TYPES:
            try:
                data = body.decode(charset)
            except (UnicodeDecodeError, LookupError) as exc:
                raise BadRequest(f"body is not valid {charset} text: {exc}") from exc
        accept_header = accept.strip() if accept else ""
        if not accept_header or accept_header == codecs.ANY:
            accept_header = self.default_accept
        if "transform_fn" in self._fns:
            result = self._call("transform_fn", context, self.model, data, media, accept_header)
        else:
            if "input_fn" in self._fns:
                decoded = self._call("input_fn", context, data, media)
            else:
                decoded = codecs.decode(data, media, charset)
            if "predict_fn" in self._fns:
                prediction = self._call("predict_fn", context, decoded, self.model)
            else:
                prediction = self._default_predict(decoded)
            if "output_fn" in self._fns:
                result = self._call("output_fn", context, prediction, accept_header)
            else:
                result = self._default_output(prediction, accept_header)
        if isinstance(result, tuple) and len(result) == 2:
            return result[0], str(result[1])
        return result, codecs.parse_accept(accept_header, self.default_accept)[0]

    def _default_predict(self, data: Any) -> Any:
        predict = getattr(self.model, "predict", None)
        if callable(predict):
            return predict(data)
        if callable(self.model):
            return self.model(data)
        raise NotImplementedError(
            "Please provide a predict_fn implementation: the model is neither callable nor has "
            "a predict method"
        )

    def _default_output(self, prediction: Any, accept: str) -> tuple[Any, str]:
        media = codecs.negotiate(codecs.parse_accept(accept, self.default_accept),
                                 list(codecs.ENCODERS))
        if _is_stream(prediction):
            return _encode_each(prediction, media), media
        return codecs.encode(prediction, media), media


def _encode_each(chunks: Iterator[Any], media: str) -> Iterator[bytes]:
    """A streamed prediction: bytes/str chunks pass through, other values are encoded each."""
    for chunk in chunks:
        if isinstance(chunk, (bytes, str)):
            yield chunk.encode() if isinstance(chunk, str) else chunk
        else:
            yield codecs.encode(chunk, media) + (b"\n" if media == codecs.JSON else b"")


def is_stream(value: object) -> bool:
    """Whether a handler result is to be streamed (a generator or other iterator)."""
    return _is_stream(value)
