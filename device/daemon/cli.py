"""Shared command-line plumbing: logging to stderr and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import AcmonError

logger = logging.getLogger(__name__)


def setup_logging(level: str | int = "INFO") -> None:
    """Log to stderr without timestamps: journald (or the terminal) adds its own."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def make_parser(prog: str, description: str | None) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser every acmon CLI starts from: --version, --debug, and a COMMAND subparser group."""
    from .. import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"acmon {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    return parser, parser.add_subparsers(title="commands", metavar="COMMAND")


# Environment variables by which a user sets the BLAS thread count; when one is set, it wins.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads() -> None:
    """One BLAS thread for this process, unless the user exported a thread count.

    The front end's matrix products are tiny (64 x 257 x 64 per window): BLAS threads only add
    hand-off latency, and on a busy 2-core machine they made compute_logmel 21x slower (12.3 ms
    against 0.58 ms per window, measured). threadpoolctl sets it at run time, so it works whenever
    numpy was imported (measured: the same 0.5 ms per window as OPENBLAS_NUM_THREADS=1 before numpy).
    numpy is loaded first so its BLAS is among the libraries limited; the variable is set as well,
    for a BLAS loaded later (scipy's, in training) and for child processes.
    """
    if any(os.environ.get(name) for name in BLAS_THREAD_VARIABLES):
        return
    import numpy  # noqa: F401, PLC0415 -- loads numpy's BLAS, so the limit below reaches it
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 -- only the entry points need it

    threadpool_limits(1, user_api="blas")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"


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
    limit_blas_threads()
    if setup is not None:
        setup(args)
    try:
        return int(args.func(args) or 0)
    except AcmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
