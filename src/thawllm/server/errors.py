"""Errors that a request can end with, rendered as OpenAI-shaped JSON bodies."""

from __future__ import annotations

import json

from starlette.responses import Response

RETRY_AFTER_S = 1


class APIError(Exception):
    """A request failed in a way that the client can act on."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    """The request body, a query parameter or a field value is invalid."""


class UnsupportedParameter(InvalidRequest):
    """The request uses an OpenAI parameter that thaw does not implement."""

    default_code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """The prompt, or the prompt plus max_tokens, does not fit in the context."""

    default_code = "context_length_exceeded"


class AuthenticationFailed(APIError):
    """The Authorization header is missing or contains a wrong key."""

    status_code = 401
    default_code = "invalid_api_key"


class NotFound(APIError):
    """No route matches the request path."""

    status_code = 404
    default_code = "not_found"


class ModelNotFound(NotFound):
    """The request names a model that this server does not serve."""

    default_code = "model_not_found"


class MethodNotAllowed(APIError):
    """The route exists but not for this HTTP method."""

    status_code = 405
    default_code = "method_not_allowed"


class PayloadTooLarge(APIError):
    """The request body is larger than max_body_bytes."""

    status_code = 413
    default_code = "payload_too_large"


class ClientDisconnected(APIError):
    """The client closed the connection before its response was ready (nginx's status 499)."""

    status_code = 499
    default_code = "client_closed_request"


class InternalError(APIError):
    """The server failed; the traceback is in its log."""

    status_code = 500
    error_type = "server_error"
    default_code = "internal_error"


class ServiceUnavailable(APIError):
    """The server cannot take the request now; the client should retry after a delay."""

    status_code = 503
    error_type = "server_error"

    def __init__(self, message: str, *, code: str):
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


class ModelLoading(ServiceUnavailable):
    """The model is still loading."""

    def __init__(self) -> None:
        super().__init__(f"The model is loading. Retry in {RETRY_AFTER_S} s.", code="model_loading")


class QueueFull(ServiceUnavailable):
    """max_queue requests already wait for the model."""

    def __init__(self, max_queue: int) -> None:
        super().__init__(
            f"The server is busy: {max_queue} requests already wait for the model (max_queue). "
            f"Retry in {RETRY_AFTER_S} s.",
            code="queue_full",
        )


def encode_json(value) -> bytes:
    """Encode VALUE as UTF-8 JSON; text with unpaired surrogates falls back to \\u escapes."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, ensure_ascii=True, allow_nan=False).encode("ascii")


class JSONBody(Response):
    """A JSON response that is valid UTF-8 whatever strings it carries."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return encode_json(content)


def error_response(error: APIError) -> Response:
    return JSONBody(error.to_dict(), status_code=error.status_code, headers=error.headers)
