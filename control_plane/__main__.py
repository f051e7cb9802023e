"""`python -m control_plane`: the same as `loraplane control-plane`."""

from __future__ import annotations

import argparse
import logging

from loraplane.control_plane import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control_plane", description=cli.__doc__)
    parser.add_argument("--log-level", default="INFO")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return cli.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
