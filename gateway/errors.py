"""The gateway's errors and the one place where gRPC status codes become OpenAI error objects.

Semantics: every failure a client sees is an `OpenAIError` rendered as
`{"error": {"message", "type", "param", "code"}}` with the HTTP status in `code`. Worker and control
plane failures arrive as gRPC status codes and are mapped by `from_grpc` only:

    INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE -> 400
    NOT_FOUND -> 404          RESOURCE_EXHAUSTED -> 429          UNAVAILABLE -> 503
    UNAUTHENTICATED -> 401    PERMISSION_DENIED -> 403           DEADLINE_EXCEEDED -> 504
    CANCELLED -> 499          anything else -> 500
    RESOURCE_EXHAUSTED for a message over gRPC's size limit -> 413

A client error (4xx) keeps the upstream message: the worker and the control plane write those for the
caller (what was wrong, what to do). Any other status gets a fixed message and the upstream details
go to the log only, as they may name internal addresses, exception types or server paths.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus

import grpc

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    499: "RequestCancelled",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
    504: "TimeoutError",
}

GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ALREADY_EXISTS: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}

GENERIC_MESSAGES = {
    499: "the request was cancelled before it finished; retry it",
    503: "no inference service could take the request right now; retry shortly",
    504: "the request timed out inside loraplane; retry it, or ask for fewer tokens",
}
GENERIC_INTERNAL = "the request failed inside loraplane; the operator can find the cause in the logs"
# gRPC core's words when a message exceeds max_send/receive_message_length (client or server side).
_TOO_LARGE_MARK = "message larger than max"


@dataclass
class OpenAIError(Exception):
    """An error to send to the client as an OpenAI error object with HTTP status `status`."""

    status: int
    message: str
    param: str | None = None
    type: str | None = None

    def __post_init__(self) -> None:
        # Messages may quote client input; an unpaired surrogate in it must not make the reply unencodable.
        self.message = self.message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(self.message)

    def body(self) -> dict:
        """The JSON body: `{"error": {"message", "type", "param", "code"}}`."""
        error_type = self.type or ERROR_TYPES.get(self.status) or HTTPStatus(self.status).phrase
        return {
            "error": {"message": self.message, "type": error_type, "param": self.param, "code": self.status}
        }


def bad_request(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param)


def model_not_found(model: str) -> OpenAIError:
    """vLLM's 404 for an unknown `model`."""
    return OpenAIError(404, f"The model `{model}` does not exist.", "model")


def no_worker(model: str) -> OpenAIError:
    return OpenAIError(503, f"No inference worker is available to serve `{model}`; try again shortly.")


def request_too_large(limit: int) -> OpenAIError:
    return OpenAIError(
        413, f"the request body is larger than this server's limit of {limit} bytes; send a smaller request"
    )


def from_grpc(error: grpc.RpcError, param: str | None = None) -> OpenAIError:
    """Map a failed gRPC call to the OpenAI error the client gets (the table in the module docstring)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (error.details() if callable(getattr(error, "details", None)) else None) or ""
    status = GRPC_TO_HTTP.get(code, 500)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE_MARK in details.lower():
        log.info("upstream refused a message as too large: %s", details)
        return OpenAIError(413, "the request is too large to forward to an inference worker; send less")
    if status >= 499:
        log.warning("upstream call failed with %s: %s", code.name, details)
        return OpenAIError(status, GENERIC_MESSAGES.get(status, GENERIC_INTERNAL))
    if status == 404 and param is None:
        param = "model"
    return OpenAIError(status, details or f"upstream call failed with {code.name}", param)
