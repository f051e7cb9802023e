"""GatewayConfig validation and the `loraplane gateway` flags that fill it."""

from __future__ import annotations

import argparse
from unittest import mock

import pytest

from loraplane.gateway import cli
from loraplane.gateway.config import DEFAULT_MAX_N, DEFAULT_MAX_REQUEST_BYTES, GatewayConfig


def config_from(argv: list[str]) -> GatewayConfig:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with mock.patch("loraplane.gateway.server.serve") as serve:
        cli.run(parser.parse_args(["--worker", "127.0.0.1:1", *argv]))
    return serve.call_args.args[0]


def test_limits_default_and_flags():
    config = config_from([])
    assert (config.max_request_bytes, config.max_n) == (DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_N)
    config = config_from(["--max-request-bytes", "1024", "--max-n", "4"])
    assert (config.max_request_bytes, config.max_n) == (1024, 4)


@pytest.mark.parametrize("field", ["max_request_bytes", "max_n"])
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=field):
        GatewayConfig(workers=("127.0.0.1:1",), **{field: 0})
