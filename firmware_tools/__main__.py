"""`python -m firmware_tools`: inspect, verify, bundle, sign and export models for devices."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from device.daemon.cli import make_parser, run_command

from . import bundles, export_c, inspect_model, mic_check


def build_parser() -> argparse.ArgumentParser:
    parser, commands = make_parser("python -m firmware_tools", __doc__)
    inspect_model.register(commands)
    bundles.register(commands)
    export_c.register(commands)
    mic_check.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
