"""Request decoders, response encoders and content negotiation.

Rules (AWS sagemaker-inference-toolkit ``decoder.py``/``encoder.py``/``utils.parse_accept``,
reference section 4.5), with the fixes users asked for:

- JSON -> ``numpy.array(json.loads(body))`` when numpy is installed (what existing
  ``predict_fn`` code expects), the plain parsed value otherwise; JSON encoding turns numpy
  arrays and scalars into lists and numbers.
- CSV -> a float array (numpy) or a list of rows of floats; CSV encoding writes one row per line.
- NPY -> ``numpy.load(..., allow_pickle=False)``: an object array is refused, never unpickled
  (AWS's decoder uses ``allow_pickle=True``, CWE-502). NPZ -> a ``dict`` of arrays, same rule.
- Content types match on the media type only: ``application/json; charset=utf-8`` is JSON and
  the charset decodes the text (huggingface-inference-toolkit #28). Accept lists honour
  q-values and wildcards (the toolkit only split on commas).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

from shipyard.toolkit.serving.errors import (
    BadRequest,
    MissingDependency,
    NotAcceptable,
    UnsupportedContentType,
)

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
OCTET_STREAM = "application/octet-stream"
ANY = "*/*"

# media types whose body is text: the toolkit hands input_fn a str for these
TEXT_TYPES = frozenset({JSON, CSV})


def _numpy(purpose: str, *, required: bool = True) -> Any:
    """Import numpy lazily: the toolkit must start in images without it."""
    try:
        import numpy
    except ImportError as exc:
        if not required:
            return None
        raise MissingDependency(
            f"{purpose} needs numpy, which is not installed in this image"
        ) from exc
    return numpy


def parse_content_type(header: str | None, default: str = JSON) -> tuple[str, str]:
    """Split ``type/subtype; charset=x`` into the lower-cased media type and the charset."""
    if not header:
        return default, "utf-8"
    media, _, params = header.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return media.strip().lower() or default, charset


def parse_accept(header: str | None, default: str = JSON) -> list[str]:
    """Media types from an Accept header, best first (q-values, then order); ``q=0`` dropped.

    A missing header or a bare ``*/*`` means ``default`` (``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``).
    """
    if not header or not header.strip():
        return [default]
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if not media:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, media))
    ranked.sort()
    types = [media for _, _, media in ranked]
    return [default if media == ANY else media for media in types] or [default]


def negotiate(accept: Sequence[str], supported: Sequence[str]) -> str:
    """The first accepted type that ``supported`` has, honouring ``type/*`` wildcards."""
    for media in accept:
        if media in supported:
            return media
        if media.endswith("/*"):
            prefix = media[:-1]
            for candidate in supported:
                if candidate.startswith(prefix):
                    return candidate
    raise NotAcceptable(
        f"Accept {', '.join(accept)} is not supported: this handler can answer "
        f"{', '.join(supported)}; implement output_fn to produce other types"
    )


# -- decoders --------------------------------------------------------------------------------


def _text(body: bytes | str, charset: str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadRequest(f"body is not valid {charset} text: {exc}") from exc


def decode_json(body: bytes | str, charset: str = "utf-8") -> Any:
    """JSON body -> numpy array (numpy installed) or the parsed value."""
    try:
        value = json.loads(_text(body, charset))
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    np = _numpy("JSON decoding", required=False)
    if np is None:
        return value
    try:
        return np.array(value)
    except ValueError as exc:  # ragged lists
        raise BadRequest(f"JSON body is not a rectangular array: {exc}") from exc


def decode_csv(body: bytes | str, charset: str = "utf-8") -> Any:
    """CSV body -> 2-D float array (or list of float rows without numpy); one row stays 2-D."""
    rows = [row for row in csv.reader(io.StringIO(_text(body, charset))) if row]
    try:
        values = [[float(cell) for cell in row] for row in rows]
    except ValueError as exc:
        raise BadRequest(f"CSV body holds a non-numeric value: {exc}") from exc
    np = _numpy("CSV decoding", required=False)
    if np is None:
        return values
    try:
        return np.array(values, dtype=float)
    except ValueError as exc:
        raise BadRequest(f"CSV rows have different lengths: {exc}") from exc


def decode_npy(body: bytes | str, charset: str = "utf-8") -> Any:
    """NPY body -> array, refusing pickled object arrays."""
    np = _numpy("application/x-npy")
    data = body.encode() if isinstance(body, str) else body
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadRequest(
            f"body is not a valid .npy array (object arrays are refused): {exc}"
        ) from exc


def decode_npz(body: bytes | str, charset: str = "utf-8") -> Any:
    """NPZ body -> ``{name: array}``, refusing pickled object arrays."""
    np = _numpy("application/x-npz")
    data = body.encode() if isinstance(body, str) else body
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise BadRequest(
            f"body is not a valid .npz archive (object arrays are refused): {exc}"
        ) from exc


DECODERS: dict[str, Callable[[bytes | str, str], Any]] = {
    JSON: decode_json,
    CSV: decode_csv,
    NPY: decode_npy,
    NPZ: decode_npz,
}


def decode(body: bytes | str, content_type: str, charset: str = "utf-8") -> Any:
    """Decode with the decoder for ``content_type`` (a bare media type); 415 if there is none."""
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise UnsupportedContentType(
            f"Content type {content_type} is not supported by the default input_fn "
            f"(supported: {', '.join(DECODERS)}); implement input_fn to decode it"
        )
    return decoder(body, charset)


# -- encoders --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``json.dumps`` default: numpy arrays and scalars become lists and numbers."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_json(value: Any) -> bytes:
    """Any JSON-able value (numpy included) -> UTF-8 JSON."""
    return json.dumps(value, default=_plain).encode()


def encode_csv(value: Any) -> bytes:
    """A scalar, a 1-D sequence (one value per line) or 2-D rows -> CSV."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        value = [value]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in value:
        writer.writerow(list(row) if isinstance(row, (list, tuple)) else [row])
    return out.getvalue().encode()


def encode_npy(value: Any) -> bytes:
    """An array-like -> ``.npy`` bytes (never pickled)."""
    np = _numpy("application/x-npy")
    out = io.BytesIO()
    np.save(out, np.asarray(value), allow_pickle=False)
    return out.getvalue()


def encode_npz(value: Any) -> bytes:
    """A ``{name: array}`` mapping (or one array, stored as ``arr_0``) -> ``.npz`` bytes."""
    np = _numpy("application/x-npz")
    out = io.BytesIO()
    arrays = value if isinstance(value, dict) else {"arr_0": value}
    np.savez(out, **{k: np.asarray(v) for k, v in arrays.items()})
    return out.getvalue()


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: encode_json,
    CSV: encode_csv,
    NPY: encode_npy,
    NPZ: encode_npz,
}


def encode(value: Any, content_type: str) -> bytes:
    """Encode with the encoder for ``content_type``; 406 if there is none."""
    encoder = ENCODERS.get(content_type)
    if encoder is None:
        raise NotAcceptable(f"Accept {content_type} is not supported by the default output_fn")
    return encoder(value)
