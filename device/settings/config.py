"""Loading the daemon's YAML configuration: the file read within bounds (yaml_files.py), validated against the
schema (schema.py), every problem one line with its file, line and key path; and what the rest of the daemon
derives from a validated config."""

from __future__ import annotations

import difflib
import logging
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from ..errors import AcmonError, ConfigError
from .schema import AcmonConfig
from .yaml_files import dotted, key_lines, read_yaml_with_root

logger = logging.getLogger(__name__)


# A config that fails validation reports at most this many problems, one line each.
MAX_ERROR_LINES = 20
# Key paths and values quoted in an error are cut to this many characters.
MAX_QUOTED_CHARS = 80

# Extra explanation for keys that are refused on purpose, by key path.
_UNKNOWN_KEY_HINTS = {
    ("mqtt", "password"): (
        "plain passwords are not accepted in the config file: use password_file, password_env or password_credential"
    ),
}


def load_config(path: str | os.PathLike) -> AcmonConfig:
    """Read, parse and validate a YAML configuration file.

    This is the config file alone: the daemon's commands use load_daemon_config(),
    which lays calibration.yaml over it and checks the files it names.

    Args:
        path: the YAML file. An empty file gives all defaults.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing, unreadable, too large or deep (see read_yaml_file),
            not valid YAML, not a mapping or fails validation. Validation errors give one
            line per problem: ``<path>:<line>: <key.path>: <problem> (got <value>)``.
    """
    name = str(path)
    data, root = read_yaml_with_root(path, "config file")
    lines = key_lines(root, name)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{name}: the top level must be a mapping of sections ({', '.join(AcmonConfig.model_fields)}), "
            f"got {_type_word(data)}"
        )
    cfg = _validate(data, name, lines)
    logger.debug("loaded configuration from %s", name)
    return cfg


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> AcmonConfig:
    """Validate a configuration given as a dict (as YAML would give it).

    Args:
        data: the configuration; None or {} means all defaults.
        source: how to name the origin in error messages.

    Raises:
        ConfigError: one line per problem, ``<source>: <key.path>: <problem> (got <value>)``.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {_type_word(data)}")
    return _validate(data, source, None)


def _validate(data: Mapping[str, Any], source: str, lines: dict[tuple[Any, ...], int] | None) -> AcmonConfig:
    try:
        return AcmonConfig.model_validate(dict(data))
    except ValidationError as exc:
        located = [_format_error(err, source, lines) for err in exc.errors(include_url=False)]
        located.sort(key=lambda item: item[0] if item[0] is not None else sys.maxsize)  # file order
        problems = list(dict.fromkeys(text for _, text in located))
        if len(problems) > MAX_ERROR_LINES:  # a file of garbage should not print thousands of lines
            more = len(problems) - MAX_ERROR_LINES + 1
            problems = problems[: MAX_ERROR_LINES - 1] + [f"{source}: {more} more problems; fix the ones above first"]
        raise ConfigError("\n".join(problems)) from None


def _type_word(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _section_model(parts: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model at a key path, or None if the path does not lead to a section."""
    model: Any = AcmonConfig
    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = unwrap_model(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def unwrap_model(annotation: Any) -> Any:
    """Optional[SomeConfig] -> SomeConfig; other annotations are returned as they are."""
    if is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Union:
        return True
    union_type = getattr(types, "UnionType", None)  # X | Y, Python >= 3.10
    return union_type is not None and origin is union_type


def _short_repr(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_error(
    err: Mapping[str, Any], source: str, lines: dict[tuple[Any, ...], int] | None
) -> tuple[int | None, str]:
    """(line, text) for one pydantic error; text is ``<source>[:<line>]: <key.path>: <problem>[ (got <value>)]``."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    value = err.get("input")
    msg = str(err.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    show_value = True
    if kind == "extra_forbidden":
        show_value = False  # may be a secret (a plain password:), and is not what is wrong
        msg = "unknown key"
        hint = _UNKNOWN_KEY_HINTS.get(loc)
        parent = _section_model(loc[:-1])
        if hint:
            msg += f"; {hint}"
        elif parent is not None and loc:
            known = list(parent.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg += f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    elif kind == "missing":
        show_value = False
        msg = "required key is missing"
    elif kind == "string_type" and isinstance(value, (bool, int, float)):
        msg += "; quote the value in YAML if it is meant as text"
    if isinstance(value, Mapping):
        show_value = False  # a whole section: a rule across its keys failed
    line = None
    if lines is not None:
        for end in range(len(loc), 0, -1):
            if loc[:end] in lines:
                line = lines[loc[:end]]
                break
    where = f"{source}:{line}" if line is not None else source
    key = _short_text(dotted(loc), 2 * MAX_QUOTED_CHARS)  # a hostile file may have a 1 MiB key
    text = f"{where}: {key}: {msg}" if key else f"{where}: {msg}"
    if show_value:
        text += f" (got {_short_repr(value)})"
    return line, " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Use of a validated configuration


def feature_pins(cfg: AcmonConfig) -> dict[str, Any]:
    """The FeatureParams fields the configuration pins (the non-null ones), by name."""
    return {name: value for name, value in cfg.features.model_dump().items() if value is not None}  # type: ignore[attr-defined]


def calibration_directory(cfg: AcmonConfig, environ: Mapping[str, str] = os.environ) -> Path:
    """Where this device's calibration.yaml, calibration.prev.yaml and site statistics live.

    <state directory>/calibration/<site>/<device id>: the state directory is $STATE_DIRECTORY under
    systemd (StateDirectory=acmon gives /var/lib/acmon, the one writable place under
    ProtectSystem=strict), else $XDG_STATE_HOME/acmon (~/.local/state/acmon). Never beside the
    config, which the unit keeps read-only. Keyed by the device's identity like the spool, so
    two configs of different devices on one machine never share a calibration.
    """
    from ..state import state_root  # noqa: PLC0415 - the state layout lives with the state files

    return state_root(environ) / "calibration" / cfg.device.site / cfg.device.id


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """'host' or 'host:port' to (host, port).

    Raises:
        AcmonError: the port is not a number in 1..65535.
    """
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        return text, default_port
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 0 < port < 65536 or not host:
        raise AcmonError(f"--broker {text!r}: expected HOST or HOST:PORT with a port in 1..65535")
    return host, port


def mqtt_client_id(cfg: AcmonConfig) -> str:
    """The MQTT client id: mqtt.client_id, or 'acmon-<site>-<device id>' when that is null."""
    return cfg.mqtt.client_id or f"acmon-{cfg.device.site}-{cfg.device.id}"
