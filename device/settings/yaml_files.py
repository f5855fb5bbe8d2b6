"""Reading YAML that a user controls: every YAML file acmon reads (config, calibration files, training config)
goes through read_yaml_file(), which bounds what an input can cost before anything is built from it, and
gives one line naming the file and line for every problem."""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

import yaml

from ..errors import ConfigError

logger = logging.getLogger(__name__)


# Bounds on every YAML file acmon reads (read_yaml_file).
# A config is a few KiB (configs/device.yaml, every key commented, is about 6 KiB).
MAX_YAML_BYTES = 1 << 20  # 1 MiB
# Nesting levels, counted through aliases; the schema needs 4 (mqtt.tls.ca_file). Far below
# Python's recursion limit, which a 5000-level document used to hit.
MAX_YAML_DEPTH = 32
# Alias references (`*name`). Each may copy a whole subtree, so ten levels of ten aliases
# ("billion laughs") describe 10^10 values in a few hundred bytes.
MAX_YAML_ALIASES = 100
# Values (scalars, lists, mappings) after every alias is expanded, as code that walks the
# result sees them; a full config has about 100. This also bounds the time a file takes:
# the pure-Python parser took 4.8 s for 100000 values on a shared x86 core (a Pi is slower).
MAX_YAML_VALUES = 10_000

_MiB = 1 << 20


class _YamlLimitError(yaml.YAMLError):
    """A bound of read_yaml_file exceeded; `problem_mark` locates it."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts while composing the node tree: depth, aliases and expanded size.

    The counts are kept per node, so an alias costs what its anchor would cost if
    written out: `size` (values below and including the node) and `height` (levels).
    An alias to a node still being composed (`&a [*a]`) has no count yet: it is a
    recursive structure, refused because every walk over it would never end.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[int] = []  # per open node: the greatest height among its children so far
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
        self._values = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimitError(f"more than {MAX_YAML_ALIASES} aliases (*name)", mark)
            measured = self._measured.get(id(node))
            if measured is None:
                raise _YamlLimitError("an alias refers to the value that contains it (a recursive structure)", mark)
            size, height = measured
            self._count(size, mark)
            self._close_child(height, mark)
            return node
        mark = self.peek_event().start_mark
        if len(self._open) + 1 > MAX_YAML_DEPTH:
            raise _YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self._values
        self._open.append(0)
        node = super().compose_node(parent, index)
        height = self._open.pop() + 1
        self._count(1, mark)
        self._measured[id(node)] = (self._values - before, height)
        self._close_child(height, mark)
        return node

    def _count(self, values: int, mark: Any) -> None:
        self._values += values
        if self._values > MAX_YAML_VALUES:
            raise _YamlLimitError(
                f"more than {MAX_YAML_VALUES} values (an alias counts as a copy of what it names)", mark
            )

    def _close_child(self, height: int, mark: Any) -> None:
        if len(self._open) + height > MAX_YAML_DEPTH:
            raise _YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels once aliases are expanded", mark)
        if self._open:
            self._open[-1] = max(self._open[-1], height)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # Some scalars that match a YAML type fail to convert: `2024-13-45` (a timestamp with
        # month 13), an integer of more than 4300 digits. Report them like syntax errors.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            reason = " ".join(str(exc).split(";")[0].split())[:160]
            raise _YamlValueError(None, None, f"this value cannot be converted ({reason})", node.start_mark) from None


class _YamlValueError(yaml.constructor.ConstructorError):
    """A scalar that looks like a YAML type (timestamp, integer) but does not convert to it."""


def read_yaml_with_root(path: str | os.PathLike, what: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of a YAML file, within the MAX_YAML_* bounds; see read_yaml_file."""
    name = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such {what}") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {what} ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{name}: cannot read {what} (it is a folder); give the path of a YAML file")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO would block the open below for ever, a device (/dev/zero) never ends.
        raise ConfigError(f"{name}: cannot read {what} (not a regular file); give the path of a YAML file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {what} ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{name}: {what} is larger than {MAX_YAML_BYTES / _MiB:g} MiB ({info.st_size} bytes); "
            "a YAML file for acmon is a few KiB: check the path"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: {what} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None
    loader = None
    try:
        loader = _BoundedLoader(text)  # checks every character at once: NUL and control characters fail here
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(name, what, text, exc)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, root


def read_yaml_file(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Parse a YAML file that a user controls, refusing what would cost too much to read.

    Bounds (module constants): MAX_YAML_BYTES of file, MAX_YAML_DEPTH levels of nesting,
    MAX_YAML_ALIASES alias references and MAX_YAML_VALUES values with aliases expanded.
    Only plain YAML types are built (SafeLoader), and recursive structures are refused.

    Args:
        path: the file; it must be a regular file (not a folder, FIFO or device).
        what: what the file is, for messages ("config file", "calibration file").

    Returns:
        The parsed document: a dict, list, scalar, or None for an empty file.

    Raises:
        ConfigError: one line naming the file (and line, where there is one), what is wrong
            and what to do.
    """
    return read_yaml_with_root(path, what)[0]


def read_yaml_file_with_lines(
    path: str | os.PathLike, what: str = "YAML file"
) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """read_yaml_file, and the 1-based line of every key by key path (("fit", "epochs") -> 12), for messages.

    Raises:
        ConfigError: as read_yaml_file, and for a key given twice in one mapping.
    """
    data, root = read_yaml_with_root(path, what)
    return data, key_lines(root, str(path))


def _yaml_error_message(name: str, what: str, text: str, exc: yaml.YAMLError) -> str:
    """One line: ``<file>:<line>:<column>: <what> ...: <problem>``."""
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        # A character YAML does not allow (NUL, most control characters): give its line, not its offset.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return (
            f"{name}:{line}:{column}: cannot read {what}: character U+{exc.character:04X} is not allowed in YAML; "
            "remove it (write it as an escape inside double quotes if it is meant)"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, _YamlLimitError):
        return f"{where}: cannot read {what}: {problem}; acmon reads plain YAML of a few KiB: simplify the file"
    if isinstance(exc, _YamlValueError):
        return f"{where}: cannot read {what}: {problem}; quote it if it is meant as text"
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: cannot read {what}: YAML syntax error: {' '.join(str(detail).split())}"


def key_lines(root: yaml.Node | None, name: str) -> dict[tuple[Any, ...], int]:
    """1-based line of every key (and list item) in the YAML node tree, by key path.

    Raises:
        ConfigError: a mapping has the same key twice (YAML would silently keep the last).
    """
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen:
                    path = dotted(prefix + (key,))
                    raise ConfigError(f"{name}:{line}: {path}: duplicate key (first given at line {seen[key]})")
                seen[key] = line
                lines[prefix + (key,)] = line
                walk(value_node, prefix + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[prefix + (index,)] = item.start_mark.line + 1
                walk(item, prefix + (index,))

    if root is not None:
        walk(root, ())
    return lines


def dotted(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text
