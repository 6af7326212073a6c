"""HTTP errors the server raises on purpose: each is a small class with a status code and a detail for the client.

    python -c "from serving.errors import ModelNotFound; print(ModelNotFound('no model named x').to_json())"

Every one of them becomes a JSON body `{"error": <detail>, "code": <code>}`. The `error` key is what the Open
Inference Protocol (KServe V2, Triton) puts its message in, so tritonclient shows the detail as it is.
"""

from __future__ import annotations

from core.errors import KilnError


class ServingError(KilnError):
    """Base class: a request the server refuses, with a message the client can act on."""

    def to_json(self) -> dict[str, str]:
        return {"error": self.detail, "code": self.code}


class BadRequest(ServingError):
    """Malformed body: not JSON, a missing field, a wrong shape or dtype, an image that does not decode."""


class Unauthorized(ServingError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServingError):
    status_code = 403
    code = "forbidden"


class ModelNotFound(ServingError):
    status_code = 404
    code = "model_not_found"


class RouteNotFound(ServingError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServingError):
    status_code = 405
    code = "method_not_allowed"


class PayloadTooLarge(ServingError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(ServingError):
    """The body did not arrive in time; the connection is closed after the answer (the rest may never come)."""

    status_code = 408
    code = "request_timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class HeadersTooLarge(ServingError):
    status_code = 431
    code = "headers_too_large"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class UnsupportedMediaType(ServingError):
    status_code = 415
    code = "unsupported_media_type"


class ModelSourceError(ServingError):
    """A model that cannot be loaded from where it was asked for: a bad `models:/` URI, an unknown name, alias or
    version, a missing file, or one without a usable ONNX model and contract. The message names the source."""

    status_code = 404
    code = "bad_model_source"


class ModelNotReady(ServingError):
    status_code = 503
    code = "model_not_ready"


class SwapRefused(Exception):
    """A new version failed one of the checks before a swap; the old version keeps serving."""

    def __init__(self, model: str, version: str, step: str, reason: str) -> None:
        super().__init__(f"{model} v{version} refused at {step}: {reason}")
        self.model = model
        self.version = version
        self.step = step
        self.reason = reason
