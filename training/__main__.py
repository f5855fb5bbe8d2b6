"""`python -m training`: make synthetic data, train and export models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from device.daemon.cli import make_parser, run_command

from . import evaluate, fit, runs, spectrograms, stats, synth


def build_parser() -> argparse.ArgumentParser:
    parser, commands = make_parser("python -m training", __doc__)
    stats.register(commands)
    spectrograms.register(commands)
    synth.register(commands)
    fit.register(commands)
    evaluate.register(commands)
    runs.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
