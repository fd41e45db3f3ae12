"""The `wideviews` command.

Each command lives in its own module of `cli/` exposing `register(subparsers) -> None`, which adds
its parser and sets `run=<function(args, settings) -> int>` as a default. To add a command, append
its module to COMMAND_MODULES; main() loads `Settings` once (honouring `--home`) and calls `run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shared.config import Settings

COMMAND_MODULES: tuple[str, ...] = ("cli.stack", "cli.upload", "cli.dlq", "cli.versions", "cli.sample", "cli.synth", "cli.demo", "cli.settings")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command module's subcommands."""
    parser = argparse.ArgumentParser(prog="wideviews", description="Precomputed views of very wide matrices.")
    parser.add_argument("--home", help="state directory of the local stack (default: $WIDEVIEWS_HOME or ./.wideviews)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `wideviews` command; return its exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # botocore and thriftpy2 are chatty at INFO and useless to an operator.
    for noisy in ("botocore", "boto3", "urllib3", "thriftpy2", "happybase"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.load(**({"home": args.home} if args.home else {}))
    return int(args.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
