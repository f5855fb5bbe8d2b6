"""State that outlives the process: the state directory, private atomic writes and the record of an open alarm."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

# Files the daemon writes hold site audio, thresholds and alarm state: owner only. Folders likewise.
PRIVATE_FILE_MODE = 0o600
# Files anyone may read (models, plots): what open() creates, narrowed by the umask.
PUBLIC_FILE_MODE = 0o666
PRIVATE_DIRECTORY_MODE = 0o700
OPEN_ALARM_FILENAME = "open-alarm.json"
# An open-alarm record is a few hundred bytes; anything much larger is not one.
MAX_RECORD_BYTES = 64 * 1024
EVENT_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def state_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The daemon's state directory: the one place it writes (spool, evidence, calibration, open alarms).

    systemd sets $STATE_DIRECTORY for StateDirectory=acmon (/var/lib/acmon, writable under
    ProtectSystem=strict; the first entry if it lists several); elsewhere $XDG_STATE_HOME/acmon,
    by default ~/.local/state/acmon.
    """
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "acmon"


def make_private_directory(path: Path) -> Path:
    """Create a folder (and its parents) for private state; an existing one keeps its mode.

    Raises:
        OSError: it cannot be created (read-only file system, a file in the way, no space).
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY_MODE)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: int = PUBLIC_FILE_MODE, tmp: Path | None = None) -> Iterator[BinaryIO]:
    """Write a file atomically: yields a binary file to write; on success it is fsync'd and renamed over `path`.

    acmon's one way to write a file another process or a power cut may meet half-written (models,
    calibration and site statistics, the spool, open-alarm records, WAV and PNG evidence, the audio
    cache). After a power cut `path` holds either the old or the new content, never a mix: the data
    is fsync'd before the rename and the folder after it. The mode is set when the temporary file
    is created (the umask can only narrow it), so a private file is never readable by others, even
    for a moment. A symlink at the temporary name is not followed. If the body raises, the
    temporary file is removed and `path` is untouched.

    Args:
        mode: PUBLIC_FILE_MODE (0o666 less the umask, as open() does) or PRIVATE_FILE_MODE (0o600).
        tmp: the temporary name (default: `path` + ".tmp", in the same folder so the rename is atomic).

    Raises:
        OSError: the folder is missing or not writable, or the disk is full.
    """
    path = Path(path)
    tmp = tmp if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        tmp.unlink()  # a leftover of a crash, or something planted there: never write through it
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(dir_fd)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = PUBLIC_FILE_MODE, tmp: Path | None = None) -> None:
    """Write bytes atomically (see atomic_open)."""
    with atomic_open(path, mode, tmp) as f:
        f.write(data)


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, without following a symlink.

    Raises:
        FileNotFoundError: there is no such file.
        OSError: it is a link, a folder, a device or larger than `limit` (errno set accordingly).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file: {path}")
        if info.st_size > limit:
            raise OSError(f"larger than {limit} bytes: {path}")
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


def open_alarm_path(site: str, device_id: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where one device's open alarm is recorded: <state>/alarms/<site>/<device id>/open-alarm.json.

    Keyed by the device's identity like the spool, so two devices on one machine never close each
    other's alarms. Site and id are validated config names (no '/', '.', '..').
    """
    return state_root(environ) / "alarms" / site / device_id / OPEN_ALARM_FILENAME


class OpenAlarmFile:
    """The record of the alarm that is open right now, so a restart can end it.

    Written (atomically, 0600) when an alarm starts and at each of its updates, removed when it
    ends. A record still there at start-up belongs to an alarm whose process died (SIGKILL,
    power cut, watchdog): the daemon ends it with reason 'restart'. Only one alarm is open at a
    time per device (one detector), so one file is enough.
    """

    def __init__(self, path: Path):
        self.path = path

    def save(self, record: dict[str, Any]) -> None:
        """Record the open alarm (see runner for the keys).

        Raises:
            OSError: the state directory cannot be written (the caller reports a storage fault).
        """
        make_private_directory(self.path.parent)
        atomic_write(self.path, json.dumps(record, separators=(",", ":")).encode(), PRIVATE_FILE_MODE)

    def clear(self) -> None:
        """Forget the record (its alarm ended).

        Raises:
            OSError: it exists but cannot be removed.
        """
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            _move_aside(self.path, "a folder")

    def load(self) -> dict[str, Any] | None:
        """The record left by a process that died during an alarm, or None.

        A damaged record (not JSON, wrong types, a link, a folder, too large) is moved aside
        and logged, never raised: it must not stop the daemon from starting.
        """
        try:
            data = read_small_file(self.path, MAX_RECORD_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error(
                "open alarm record %s cannot be read (%s): moved aside, its alarm cannot be ended",
                self.path,
                exc.strerror or exc,
            )
            _move_aside(self.path, "unreadable")
            return None
        try:
            record = validate_record(json.loads(data.decode("utf-8")))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            logger.error(
                "open alarm record %s is damaged (%s): moved aside, its alarm cannot be ended",
                self.path,
                " ".join(str(exc).split())[:200],
            )
            _move_aside(self.path, "damaged")
            return None
        return record


def _move_aside(path: Path, why: str) -> None:
    """Rename a damaged record to <name>.bad (replacing an older one) so the next start does not meet it again."""
    bad = path.with_name(path.name + ".bad")
    try:
        if bad.is_dir() and not bad.is_symlink():
            bad.rename(bad.with_name(bad.name + f".{os.getpid()}"))
        os.replace(path, bad)
    except OSError as exc:
        logger.error("open alarm record %s (%s) cannot be moved aside either: %s", path, why, exc.strerror or exc)


def _number(record: Mapping[str, Any], key: str, minimum: float | None = None) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}")
    return float(value)


def _text(record: Mapping[str, Any], key: str, limit: int = 1024, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key} must be a string of at most {limit} characters")
    return value


def validate_record(data: Any) -> dict[str, Any]:
    """Check an open-alarm record read from disk; returns it with exactly the known keys.

    Raises:
        ValueError: not a record this daemon writes (what is wrong, in one line).
    """
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    event_id = _text(data, "event_id", 32)
    if not EVENT_ID_PATTERN.match(event_id or ""):
        raise ValueError("event_id must be 32 lowercase hex digits")
    model = data.get("model")
    if not isinstance(model, dict):
        raise ValueError("model must be an object")
    evidence = _text(data, "evidence", 255, optional=True)
    if evidence is not None and ("/" in evidence or evidence in ("", ".", "..") or "\x00" in evidence):
        raise ValueError("evidence must be a file name")
    record: dict[str, Any] = {
        "event_id": event_id,
        "seq": int(_number(data, "seq", 0)),
        "start_time": _text(data, "start_time", 64),
        "start_stream_seconds": _number(data, "start_stream_seconds", 0),
        "last_stream_seconds": _number(data, "last_stream_seconds", 0),
        "peak_score": _number(data, "peak_score"),
        "mean_score": _number(data, "mean_score"),
        "threshold": _number(data, "threshold"),
        "model": {"name": _text(model, "name", 256), "version": _text(model, "version", 256)},
        "source": _text(data, "source", 4096),
        "evidence": evidence,
    }
    if data.get("rule") in ("model", "level"):  # records written before the level rule have none: the model's
        record["rule"] = data["rule"]
    if not record["threshold"] > 0:
        raise ValueError("threshold must be > 0")
    if record["seq"] != data["seq"]:
        raise ValueError("seq must be an integer")
    return record
