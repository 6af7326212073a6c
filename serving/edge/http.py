"""HTTP helpers every protocol module shares: the store of a request, reading bodies, JSON responses.

    python -c "from serving.edge.http import json_response; print(json_response({'ok': True}).body)"

Responses are serialised once with `json.dumps` into bytes: FastAPI's `jsonable_encoder` walks every value
again, which is most of the cost of a small tabular answer.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import math
import re
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from starlette.responses import Response

from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    from serving.dataplane import DataPlane
    from serving.deployment.loading import LoadedModel
    from serving.deployment.store import ModelStore


def request_store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


def request_plane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def routing_key(request: Request) -> str | None:
    """The client's canary routing key (KILN_ROUTING_HEADER, default X-Kiln-Routing-Key), if it sent one."""
    header: str = request.app.state.settings.routing_header
    return request.headers.get(header)


def json_response(content: Any, model: LoadedModel | None = None, status_code: int = 200) -> Response:
    try:
        body = _dumps(content).encode()
    except ValueError:  # NaN or inf in a model output: JSON has no such numbers, so they become null
        body = _dumps(_finite(content)).encode()
    headers = _NO_HEADERS if model is None else _model_headers(model.name, model.version)
    return JSONBody(body, status_code, headers)


class JSONBody(Response):
    """A response whose body is already JSON bytes: its raw headers are written here in one step, where Starlette's
    Response would lower-case, encode and search a header dict for every answer (a tenth of a tabular model's
    CPU per request in the inference path's profile)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [*headers]  # in Starlette's order: the given headers, content-length, content-type
        if not (status_code < 200 or status_code in (204, 304)):
            self.raw_headers.append((b"content-length", str(len(body)).encode("latin-1")))
        self.raw_headers.append((b"content-type", b"application/json"))


_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


@functools.lru_cache(maxsize=256)
def _model_headers(name: str, version: str) -> tuple[tuple[bytes, bytes], ...]:
    """X-Kiln-Model and X-Kiln-Model-Version as raw headers (a model name and version are a few, so cached)."""
    return ((b"x-kiln-model", name.encode("latin-1")), (b"x-kiln-model-version", str(version).encode("latin-1")))


def _encoder() -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"), allow_nan=False)`, with the C encoder made once: dumps builds a
    JSONEncoder and a C encoder for every call. No circular check: answers are trees the server built."""
    options = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # CPython without its _json accelerator
        return options.encode
    encode = make(None, options.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


_dumps = _encoder()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request) -> bytes:
    """The body, decompressed when the client sent Content-Encoding gzip or deflate (as tritonclient can)."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"content-encoding {encoding!r} is not supported; use gzip, deflate or none")
    limit: int = request.app.state.settings.max_body_bytes
    return _inflate(body, encoding, limit)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise BadRequest(f"the {encoding} body could not be decompressed: {err}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is over the {limit}-byte limit")
    return out


async def read_json(request: Request) -> Any:
    if media_type(request) not in ("application/json", ""):
        raise UnsupportedMediaType(f"expected content-type application/json, got {media_type(request)!r}")
    return parse_json(await read_body(request))


# numpy holds at most 64 dimensions, so no tensor needs deeper JSON; deeper documents are refused, not parsed
MAX_JSON_DEPTH = 64
# uint64's largest value has 20 digits: a longer integer cannot be a tensor value or a feature, and Python's own
# int() refuses 4,300 digits with a ValueError, so long digit strings are refused while parsing
MAX_INT_DIGITS = 20
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def parse_json(body: bytes) -> Any:
    """The JSON document of a request body; anything that is not one, or is nested or sized past what a
    tensor can be, is a 400 naming what is wrong (never a RecursionError or ValueError from the parser)."""
    if not body:
        raise BadRequest("the body is empty; a JSON document was expected")
    try:
        document = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))  # as json.loads does
    except RecursionError:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise BadRequest(f"the body is not valid JSON: {_short(str(err))}") from None
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    return document


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise BadRequest(f"a JSON integer has {digits} digits; at most {MAX_INT_DIGITS} fit any tensor datatype")
    return int(text)


# made once: json.loads(body, parse_int=...) builds a decoder and its C scanner for every call
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a valid JSON document, without recursion: strings are
    blanked first (brackets inside them do not count), then the brackets are summed with numpy."""
    import numpy as np

    bare = _STRING.sub(b'""', body)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, (91, 123)).astype(np.int32) - np.isin(codes, (93, 125)).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "json_depth", "json_response", "media_type", "parse_json", "read_body", "read_json", "request_plane",
    "request_store", "routing_key",
]  # fmt: skip
