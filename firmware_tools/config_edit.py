"""Set or read `section.key` values in a YAML config without losing its comments (the installer's config step).

`python -m firmware_tools.config_edit FILE --set model.path=/etc/acmon/model.acmon [--set ...] [-o OUT]`
writes the edited text (to OUT, else stdout); `--get model.path` prints one value ('' when absent).

The value is replaced where it stands, so every comment of the template survives, and the result is parsed
again and compared with what was asked. A template this cannot edit in place (a flow-style `model: {...}`
section, an empty `model:`) is re-written by the YAML dumper instead: same values, comments lost, and a
warning says so.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from device.daemon.cli import run_command
from device.errors import ConfigError
from device.settings.yaml_files import read_yaml_file

logger = logging.getLogger("firmware_tools.config_edit")  # not __main__ under -m


def _parse_assignment(text: str) -> tuple[str, str, str]:
    """'section.key=value' -> (section, key, value)."""
    dotted, sep, value = text.partition("=")
    section, dot, key = dotted.partition(".")
    if not sep or not dot or not section or not key or "." in key:
        raise ConfigError(f"--set {text[:80]!r}: write SECTION.KEY=VALUE, e.g. model.path=/etc/acmon/model.acmon")
    if "\n" in value or "\r" in value:
        raise ConfigError(f"--set {dotted}: the value must be one line")
    return section, key, value


def _find(mapping: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _set_in_place(text: str, section: str, key: str, value: str) -> str | None:
    """The text with section.key set to the string `value`, comments kept; None if it cannot be done in place."""
    scalar = json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return f"{section}:\n  {key}: {scalar}\n"
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        return None
    found = _find(root, section)
    if found is None:  # no such section yet: append it
        return text + ("" if text.endswith("\n") else "\n") + f"\n{section}:\n  {key}: {scalar}\n"
    _, body = found
    if not isinstance(body, yaml.MappingNode) or body.flow_style or not body.value:
        return None
    entry = _find(body, key)
    if entry is not None:
        _, old = entry
        if not isinstance(old, yaml.ScalarNode):
            return None
        # Replace the old value's own characters only: a comment after it on the line stays.
        return text[: old.start_mark.index] + scalar + text[old.end_mark.index :]
    # A new key goes on the line after the section's last value, at the indentation of its keys.
    indent = " " * body.value[0][0].start_mark.column
    end = body.value[-1][1].end_mark
    if end.column == 0:  # a block scalar ends at the start of the next line
        at = end.index
    else:
        newline = text.find("\n", end.index)
        at = len(text) if newline < 0 else newline + 1
    prefix = text[:at] if text[:at].endswith("\n") or not at else text[:at] + "\n"
    return prefix + f"{indent}{key}: {scalar}\n" + text[at:]


def set_values(text: str, assignments: Sequence[tuple[str, str, str]], name: str = "<config>") -> tuple[str, bool]:
    """Apply `section.key = value` assignments (string values) to YAML text.

    Args:
        text: the YAML document.
        assignments: (section, key, value) triples.
        name: the file, for messages.

    Returns:
        (new text, True when every comment was kept; False when the document had to be re-dumped).

    Raises:
        ConfigError: the text is not YAML, its top level is not a mapping, or a section is not a mapping.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of sections, got {type(data).__name__}")
    expected = copy.deepcopy(data)
    for section, key, value in assignments:
        if expected.get(section) is None:
            expected[section] = {}
        if not isinstance(expected[section], dict):
            raise ConfigError(f"{name}: {section} must be a mapping of keys, got {type(expected[section]).__name__}")
        expected[section][key] = value
    edited: str | None = text
    for section, key, value in assignments:
        edited = _set_in_place(edited, section, key, value) if edited is not None else None
    if edited is not None and yaml.safe_load(edited) == expected:
        return edited, True
    return yaml.safe_dump(expected, sort_keys=False), False


def get_value(data: Any, dotted: str) -> Any:
    """section.key of parsed YAML, or None when absent."""
    section, _, key = dotted.partition(".")
    body = data.get(section) if isinstance(data, dict) else None
    return body.get(key) if isinstance(body, dict) else None


def cmd_config_edit(args: argparse.Namespace) -> int:
    data = read_yaml_file(args.file, "config file")  # the size, depth and alias bounds of every acmon YAML file
    if args.get:
        value = get_value(data, args.get)
        print("" if value is None else value)
        return 0
    text = Path(args.file).read_text(encoding="utf-8-sig")
    new_text, kept = set_values(text, [_parse_assignment(a) for a in args.set], args.file)
    if not kept:
        logger.warning(
            "%s: cannot set the values in place; re-written with the same values, comments dropped", args.file
        )
    if args.output:
        Path(args.output).write_text(new_text, encoding="utf-8")
    else:
        sys.stdout.write(new_text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m firmware_tools.config_edit", description=__doc__)
    parser.add_argument("file", help="the YAML config file")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="set a string value (repeatable)")
    action.add_argument("--get", metavar="SECTION.KEY", help="print one value ('' when absent)")
    parser.add_argument("-o", "--output", help="write the edited config here (default: standard output)")
    parser.set_defaults(func=cmd_config_edit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
