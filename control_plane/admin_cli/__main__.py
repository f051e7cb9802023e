"""`python -m loraplane.control_plane.admin_cli adapters|workers ...`: the admin CLI alone."""

from __future__ import annotations

import argparse
import logging

from loraplane.control_plane.admin_cli import adapters, workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loraplane.control_plane.admin_cli")
    parser.add_argument("--log-level", default="WARNING")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in (("adapters", adapters), ("workers", workers)):
        sub = commands.add_parser(name, help=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    return args._module.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
