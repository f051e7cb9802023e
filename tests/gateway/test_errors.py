"""gRPC status -> OpenAI error mapping (the one place it happens)."""

from __future__ import annotations

import grpc
import pytest
from loraplane.gateway.errors import OpenAIError, from_grpc


class FakeRpcError(Exception):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    ("code", "status"),
    [("INVALID_ARGUMENT", 400), ("NOT_FOUND", 404), ("RESOURCE_EXHAUSTED", 429), ("UNAVAILABLE", 503)],
)
def test_grpc_status_mapping(code, status):
    error = from_grpc(FakeRpcError(getattr(grpc.StatusCode, code), "why"))
    assert isinstance(error, OpenAIError) and error.status == status
    assert error.body()["error"]["message"] == "why" and error.body()["error"]["code"] == status
