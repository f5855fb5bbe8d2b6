"""What the export-c modules share: their error, and the formatting of C source text (literals, arrays, comments)."""

from __future__ import annotations

import textwrap

import numpy as np

from device.errors import AcmonError


class ExportError(AcmonError):
    """The model cannot be exported for TFLite Micro, or the output cannot be written."""


def c_float(value: float) -> str:
    """A float32 literal that reads back as exactly the same float32 (9 significant digits)."""
    text = f"{float(np.float32(value)):.9g}"
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def c_string(text: str) -> str:
    """A C string literal of any text: printable ASCII as is, everything else as octal escapes of its UTF-8."""
    out = "".join(
        chr(b) if 32 <= b < 127 and chr(b) not in '\\"?' else f"\\{b:03o}" for b in text.encode("utf-8")[:200]
    )
    return f'"{out}"'


def wrap_comment(text: str) -> str:
    return "\n".join("// " + line for line in textwrap.wrap(text, 110))


def c_array(values: list[str], per_line: int) -> str:
    return ",\n".join("  " + ", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line))
