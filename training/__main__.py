"""`python -m training`: make synthetic data, train and export models."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from device import __version__
from device.cli import run_command

from . import fit, synth


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--version", action="version", version=f"acmon {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    synth.register(commands)
    fit.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
