"""Shared command-line plumbing: logging to stderr and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import AcmonError

logger = logging.getLogger(__name__)


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr without timestamps: journald (or the terminal) adds its own."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def make_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser every acmon CLI starts from: --version, --debug, and a COMMAND subparser group."""
    from . import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"acmon {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    return parser, parser.add_subparsers(title="commands", metavar="COMMAND")


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    setup: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse arguments and run the chosen subcommand's `func(args) -> int`.

    An AcmonError (bad file, key or value) becomes one line on stderr and exit 1;
    Ctrl-C exits 130. Any other exception is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging("DEBUG" if getattr(args, "debug", False) else "INFO")
    if setup is not None:
        setup(args)
    try:
        return int(args.func(args) or 0)
    except AcmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
