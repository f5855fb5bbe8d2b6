"""The MQTT password from its configured source (file, environment variable, systemd credential), and the
check that a path names a regular file before anything opens it."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError
from .schema import MqttConfig, WebConfig

logger = logging.getLogger(__name__)


# A password file (or credential) larger than this is the wrong file.
MAX_SECRET_BYTES = 4096


def resolve_mqtt_password(mqtt_cfg: MqttConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """Read the MQTT password from its configured source; call it at connect time.

    Args:
        mqtt_cfg: the validated mqtt section.
        environ: environment to read password_env and $CREDENTIALS_DIRECTORY from.

    Returns:
        The password, or None when no password source is configured. One trailing
        newline is stripped from files and credentials.

    Raises:
        ConfigError: the file, variable or credential is missing, unreadable or empty.
            Messages name the source, never its content.
    """
    if mqtt_cfg.password_env is not None:
        name = mqtt_cfg.password_env
        value = environ.get(name)
        if value is None:
            raise ConfigError(f"mqtt.password_env: environment variable {name} is not set")
        if not value:
            raise ConfigError(f"mqtt.password_env: environment variable {name} is empty")
        return value
    if mqtt_cfg.password_file is not None:
        return _read_secret_file(Path(mqtt_cfg.password_file), f"mqtt.password_file: {mqtt_cfg.password_file}")
    if mqtt_cfg.password_credential is not None:
        return _read_credential("mqtt.password_credential", mqtt_cfg.password_credential, "password_file", environ)[0]
    return None


# A shorter web token is guessable over a LAN.
MIN_WEB_TOKEN_CHARS = 16


def resolve_web_token(web_cfg: WebConfig, environ: Mapping[str, str] = os.environ) -> str:
    """Read the commissioning page's token from token_file or token_credential; call it at start.

    Raises:
        ConfigError: no source, or it is missing, unreadable, empty or shorter than MIN_WEB_TOKEN_CHARS.
            Messages name the source, never its content.
    """
    if web_cfg.token_file is not None:
        what = f"web.token_file: {web_cfg.token_file}"
        token = _read_secret_file(Path(web_cfg.token_file), what)
    elif web_cfg.token_credential is not None:
        token, what = _read_credential("web.token_credential", web_cfg.token_credential, "token_file", environ)
    else:
        raise ConfigError("web: the page needs a token: set web.token_file or web.token_credential")
    if len(token.strip()) < MIN_WEB_TOKEN_CHARS or token != token.strip():
        raise ConfigError(
            f"{what}: the token must be at least {MIN_WEB_TOKEN_CHARS} characters without surrounding spaces "
            "(make one with: openssl rand -hex 16)"
        )
    return token


def _read_credential(key: str, name: str, alternative: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(content, how messages name it) of the systemd credential `name` that config key `key` names.

    Raises:
        ConfigError: $CREDENTIALS_DIRECTORY is not set (not under systemd: use `alternative`), or the file is
            missing, unreadable or empty.
    """
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"{key}: credential {name!r} cannot be read: CREDENTIALS_DIRECTORY is not set "
            f"(run the daemon under systemd with LoadCredential={name}:<file>, or use {alternative})"
        )
    what = f"{key}: credential {name!r} ({Path(directory) / name})"
    return _read_secret_file(Path(directory) / name, what), what


def _read_secret_file(path: Path, what: str) -> str:
    problem = not_regular_file(path)
    if problem:
        raise ConfigError(f"{what}: {problem}")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"{what}: larger than {MAX_SECRET_BYTES} bytes: not a password file; check the path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(f"{what}: is empty")
    logger.debug("read the secret of %s", what.split(": ", 1)[0])
    return text


def not_regular_file(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a file (missing, a folder, a FIFO or device), or None if it is one.

    Reading a FIFO blocks for ever and a device such as /dev/zero never ends: check before opening.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a FIFO, socket or device)"
    return None
