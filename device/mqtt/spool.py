"""On-disk spool of outgoing events: written and fsync'd before publishing, removed on the broker's PUBACK.

One file per message. Events are rare (alarms), so a file each costs nothing, and it is
the layout that survives an SD card best: a message is written to a temporary name,
fsync'd, then renamed into place and the directory fsync'd, so after a power cut a
file under its final name is complete and a half-written one is only a `.tmp` that the
next start deletes. Removing a delivered message is one unlink; nothing is ever
rewritten in place, unlike an append-only segment that needs compaction.

File names are a zero-padded sequence number, so sorting them gives the publication
order, also across restarts (numbering continues after the highest file found).
A file holds the topic on its first line and the payload after it.

Nothing found in the folder may stop the daemon or be published blindly: every file is
checked when loaded (a regular file, not a link; a name the spool writes; a bounded
size; a topic the broker accepts for PUBLISH and inside this device's tree; a payload
the caller's check accepts). Anything else is moved aside into `.quarantine/`
(bounded, counted, logged), and so is a message the broker keeps refusing. When the
disk cannot be written, messages are kept in memory and still delivered.

Over 500 lines on purpose: the checks above, the quarantine and the memory fallback are what keeps an
alarm from being lost or a planted file from being published; they belong with the one writer and reader.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import AcmonError
from ..state import atomic_write

logger = logging.getLogger(__name__)

SUFFIX = ".msg"
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
# Starts with a dot like the lock: site and device ids (topic levels, and so spool folder
# names) cannot, so another device's spool can never be this folder.
QUARANTINE_DIR = ".quarantine"
# Kept for an operator to look at; beyond this the oldest are deleted.
QUARANTINE_MAX_FILES = 100
_NAME_DIGITS = 16
_MAX_NAME_DIGITS = 20
# MQTT allows 65535 bytes; acmon's topics are `<prefix>/<site>/<id>/events`, under 300 bytes.
MAX_TOPIC_BYTES = 4096
# An event is about 1 KB of JSON; a file beyond this bound is not one of ours and is never read in full.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ENTRY_BYTES = MAX_TOPIC_BYTES + 1 + MAX_PAYLOAD_BYTES

# Characters a broker may refuse in a topic (MQTT 3.1.1 section 1.5.3; mosquitto closes
# the connection on them): control characters and Unicode noncharacters.
_NONCHARACTERS = "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17))
_FORBIDDEN_TOPIC_CHARACTER = re.compile(f"[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef{_NONCHARACTERS}]")


@dataclass(frozen=True)
class SpoolEntry:
    """One stored message: its file (None if it could only be kept in memory), order number, topic, payload."""

    number: int
    path: Path | None
    topic: str
    payload: bytes
    created_seconds: float  # wall clock (time.time()), from the file's mtime

    @property
    def size_bytes(self) -> int:
        return len(self.topic.encode()) + 1 + len(self.payload)


@dataclass(frozen=True)
class SpoolStats:
    """What telemetry and health report.

    `pending` messages wait for the broker, `unsaved` of them in memory only (the disk
    could not be written; lost if the process stops); `dropped` and `quarantined` count
    messages since this process started; `problem` says why the spool is not durable now.
    """

    pending: int
    dropped: int
    bytes: int
    quarantined: int = 0
    unsaved: int = 0
    problem: str | None = None


def entry_name(number: int) -> str:
    """File name of message `number`; lexical order is numeric order."""
    return f"{number:0{_NAME_DIGITS}d}{SUFFIX}"


def entry_number(name: str) -> int | None:
    """The number of a file name entry_name() makes, or None for any other name."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    if not (stem.isascii() and stem.isdigit() and len(stem) <= _MAX_NAME_DIGITS):
        return None
    number = int(stem)
    return number if entry_name(number) == name else None


def encode_entry(topic: str, payload: bytes) -> bytes:
    """File contents: the topic, a newline, the payload. Topics never contain newlines."""
    if "\n" in topic:
        raise ValueError("an MQTT topic for the spool must not contain a newline")
    return topic.encode() + b"\n" + payload


def decode_entry(data: bytes) -> tuple[str, bytes]:
    """Inverse of encode_entry.

    Raises:
        ValueError: no newline, or a topic that is not UTF-8.
    """
    topic, sep, payload = data.partition(b"\n")
    if not sep or not topic:
        raise ValueError("no topic line")
    try:
        return topic.decode("utf-8"), payload
    except UnicodeDecodeError as exc:
        raise ValueError(f"topic is not UTF-8 (byte {exc.start})") from None


def check_publish_topic(topic: str) -> str | None:
    """None if a broker accepts `topic` for PUBLISH (MQTT 3.1.1, and acmon's length bound), else why not."""
    if not topic:
        return "empty topic"
    if "+" in topic or "#" in topic:
        return "topic contains an MQTT wildcard ('+' or '#'), which PUBLISH does not allow"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "topic is not valid Unicode (a lone surrogate)"
    if size > MAX_TOPIC_BYTES:
        return f"topic is {size} bytes long, more than {MAX_TOPIC_BYTES}"
    bad = _FORBIDDEN_TOPIC_CHARACTER.search(topic)
    if bad:
        return f"topic contains the character U+{ord(bad.group()):04X} (a control character or noncharacter)"
    if topic.startswith("$"):
        return "topic starts with '$', reserved for the broker"
    return None


def _kind(mode: int) -> str:
    """What a non-regular file is, for a log line."""
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device node" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


class Spool:
    """A bounded, ordered, durable queue of messages in one directory, for one process.

    Not thread-safe: the publisher's network thread is its only user. Bounds are
    enforced when a message is added and by `expire()`: beyond `max_bytes`, or older
    than `max_age_seconds`, the oldest messages are deleted and counted as dropped.

    Args:
        directory: created if missing; locked (flock) so a second process with the
            same identity fails at start instead of delivering the first one's messages.
        max_bytes: total size of stored messages, in bytes.
        max_age_seconds: messages older than this are dropped, in seconds.
        clock: wall-clock time in seconds (tests replace it).
        topic_prefix: every topic must start with it (this device's `<base topic>/`);
            "" = any topic.
        check_payload: check_payload(payload) -> None, or why the payload is unusable.

    Raises:
        AcmonError: another process holds the spool. Nothing else stops start-up: a
            folder that cannot be created or written is reported in `stats.problem`
            and messages are kept in memory.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
        topic_prefix: str = "",
        check_payload: Callable[[bytes], str | None] | None = None,
    ):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.topic_prefix = topic_prefix
        self._check_payload = check_payload
        self._clock = clock
        self._entries: dict[int, SpoolEntry] = {}
        self._bytes = 0
        self._unsaved = 0  # entries without a file; a count, so that stats never iterates (other threads read it)
        self.dropped = 0
        self.quarantined = 0
        self.problem: str | None = None
        self._closed = False
        self._quarantine_warned = False
        self._next = 0
        self._lock_fd: int | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            self._writable = False
            self.problem = f"cannot create spool folder {self.directory}: {exc.strerror or exc}"
            logger.error(
                "spool: %s; events are kept in memory only (lost if the daemon stops before delivery)", self.problem
            )
            return
        self._writable = True
        self._lock_fd = self._lock()
        for entry in self._load():
            self._entries[entry.number] = entry
            self._bytes += entry.size_bytes
        self.expire()

    # -- public ----------------------------------------------------------

    def check(self, topic: str, payload: bytes) -> str | None:
        """None if the message can be published, else why not (one line)."""
        problem = check_publish_topic(topic)
        if problem is None and not topic.startswith(self.topic_prefix):
            problem = f"topic is outside this device's tree {self.topic_prefix}"
        if problem is None and len(payload) > MAX_PAYLOAD_BYTES:
            problem = f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
        if problem is None and self._check_payload is not None:
            problem = self._check_payload(payload)
        return problem

    def append(self, topic: str, payload: bytes) -> SpoolEntry | None:
        """Store a message durably (fsync'd) and return it; None if it is dropped.

        Dropped (and counted) are a message that could never be published (see check())
        and one that alone exceeds max_bytes. Older messages are dropped first if needed
        to stay within max_bytes. When the disk cannot be written the message is kept in
        memory only (entry.path is None) and still returned.
        """
        problem = self.check(topic, payload)
        if problem is not None:
            self._count_drop(1, f"a message that could never be published ({problem})")
            return None
        data = encode_entry(topic, payload)
        if len(data) > self.max_bytes:
            self._count_drop(1, "a message larger than the whole spool")
            return None
        self._make_room(len(data))
        number = self._next
        self._next += 1
        entry = SpoolEntry(number, self._write(number, data), topic, payload, self._clock())
        self._entries[number] = entry
        self._bytes += entry.size_bytes
        self._unsaved += entry.path is None
        return entry

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a delivered message (unlink). A message already dropped is ignored."""
        if self._take(entry):
            self._unlink(entry.path)

    def quarantine(self, entry: SpoolEntry, reason: str) -> None:
        """Take a message out of the queue for good, moving its file aside into `.quarantine/`."""
        if not self._take(entry):
            return
        if entry.path is None:
            self.quarantined += 1
            logger.error(
                "spool: dropped message %d held in memory (%s); %d quarantined since start",
                entry.number,
                reason,
                self.quarantined,
            )
        else:
            self._quarantine_path(entry.path, reason)

    def pending(self) -> list[SpoolEntry]:
        """Messages not yet acknowledged, oldest first."""
        return [self._entries[n] for n in sorted(self._entries)]

    def contains(self, entry: SpoolEntry) -> bool:
        return entry.number in self._entries

    def expire(self) -> int:
        """Drop messages older than max_age_seconds; returns how many."""
        cutoff = self._clock() - self.max_age_seconds
        old = [e for e in self.pending() if e.created_seconds < cutoff]
        for entry in old:
            self._drop(entry)
        if old:
            self._count_drop(len(old), f"older than {self.max_age_seconds:.0f} s")
        return len(old)

    @property
    def stats(self) -> SpoolStats:
        """Counters only (no iteration), so another thread may read them while the owner works."""
        return SpoolStats(len(self._entries), self.dropped, self._bytes, self.quarantined, self._unsaved, self.problem)

    def close(self, remove_if_empty: bool = True) -> None:
        """Release the lock; with nothing left, delete the directory (and its empty parents are left alone)."""
        if self._closed:
            return
        self._closed = True
        unsaved = self.stats.unsaved
        if unsaved:
            logger.error("spool: %d message(s) held in memory only (the spool could not be written) are lost", unsaved)
        if self._lock_fd is None:
            return  # not ours to clean up: we never held the lock
        if remove_if_empty and not any(entry.path is not None for entry in self._entries.values()):
            self._unlink(self.directory / LOCK_NAME)
            try:
                self.directory.rmdir()
            except OSError:
                pass  # something else lives there (a quarantine, another device's spool); leave it
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- internals ---------------------------------------------------------

    def _lock(self) -> int | None:
        """flock the spool; None (logged) when the lock file cannot be made, which must not stop start-up."""
        path = self.directory / LOCK_NAME
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            mode = None
            logger.error("spool: cannot inspect %s: %s", path, exc.strerror or exc)
        if mode is not None and not stat.S_ISREG(mode):
            self._quarantine_path(path, _kind(mode))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            logger.error(
                "spool: cannot create the lock %s (%s); running without it, so a second daemon with "
                "this identity would not be stopped",
                path,
                exc.strerror or exc,
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AcmonError(
                    f"spool {self.directory} is in use by another process: "
                    "two daemons with the same site and device id?"
                ) from None
            logger.error("spool: cannot lock %s (%s); running without the lock", path, exc.strerror or exc)
            return None
        return fd

    def _load(self) -> list[SpoolEntry]:
        """Entries left by a previous run, in order; everything else that looks like ours is cleaned up."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            self.problem = f"cannot list spool folder {self.directory}: {exc.strerror or exc}"
            logger.error("spool: %s; messages of a previous run, if any, stay where they are", self.problem)
            return []
        entries = []
        for name in names:
            path = self.directory / name
            if name.endswith(TMP_SUFFIX):
                self._remove_leftover(path)
                continue
            if not name.endswith(SUFFIX):
                continue  # the lock, the quarantine, or not ours: leave it alone
            number = entry_number(name)
            if number is None:
                self._quarantine_path(path, "not a name the spool writes")
                continue
            self._next = max(self._next, number + 1)  # never reuse a number, whatever becomes of its file
            try:
                topic, payload, created = self._read(path)
                problem = self.check(topic, payload)
            except (OSError, ValueError) as exc:
                problem = str(exc) if isinstance(exc, ValueError) else f"unreadable: {exc.strerror or exc}"
            except Exception as exc:  # noqa: BLE001 - e.g. a payload check that fails: still never block start-up
                problem = f"cannot be checked: {type(exc).__name__}: {str(exc)[:200]}"
            if problem is not None:
                self._quarantine_path(path, problem)
                continue
            entries.append(SpoolEntry(number, path, topic, payload, created))
        if entries:
            logger.info("spool: %d message(s) from a previous run to deliver first", len(entries))
        return entries

    @staticmethod
    def _read(path: Path) -> tuple[str, bytes, float]:
        """(topic, payload, mtime) of one entry file, never following a link or reading past the size bound.

        Raises:
            ValueError: not a regular file, too large, or not an entry.
            OSError: unreadable.
        """
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(_kind(mode))
        # O_NOFOLLOW and fstat: the checks above hold for the file actually read, even if it was swapped.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(_kind(info.st_mode))
            if info.st_size > MAX_ENTRY_BYTES:
                raise ValueError(f"{info.st_size} bytes, more than a message may be ({MAX_ENTRY_BYTES})")
            chunks, size = [], 0
            while size <= MAX_ENTRY_BYTES:
                chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        if size > MAX_ENTRY_BYTES:
            raise ValueError(f"more than {MAX_ENTRY_BYTES} bytes")
        topic, payload = decode_entry(b"".join(chunks))
        return topic, payload, info.st_mtime

    def _write(self, number: int, data: bytes) -> Path | None:
        """Write one entry durably; None (logged, in `problem`) when the disk refuses."""
        if not self._writable:
            return None
        path = self.directory / entry_name(number)
        tmp = path.with_suffix(TMP_SUFFIX)
        try:
            atomic_write(path, data, 0o600, tmp=tmp)  # fsync'd, renamed, the folder fsync'd; links not followed
        except OSError as exc:
            self._unlink(tmp)
            problem = f"cannot write to spool folder {self.directory}: {exc.strerror or exc}"
            if problem != self.problem:
                logger.error(
                    "spool: %s; keeping events in memory until it can (lost if the daemon stops first)", problem
                )
            self.problem = problem
            return None
        if self.problem is not None:
            logger.warning("spool: %s is writable again", self.directory)
            self.problem = None
        return path

    def _remove_leftover(self, path: Path) -> None:
        """A `.tmp` left by a power cut is deleted; a directory of that name is moved aside."""
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return
        if stat.S_ISDIR(mode):
            self._quarantine_path(path, _kind(mode))
            return
        logger.warning("spool: deleting %s, half written when the last run stopped", path.name)
        self._unlink(path)

    def _quarantine_path(self, path: Path, reason: str) -> None:
        """Move a file (or directory, or link: never followed) into `.quarantine/`, or delete it if that fails."""
        self.quarantined += 1
        target = self._quarantine_target(path.name)
        if target is not None:
            try:
                os.rename(path, target)
            except OSError as exc:
                logger.error("spool: cannot move %s aside: %s", path.name, exc.strerror or exc)
            else:
                logger.error(
                    "spool: quarantined %s (%s): moved to %s; %d quarantined since start",
                    path.name,
                    reason,
                    target.parent,
                    self.quarantined,
                )
                self._prune_quarantine(target.parent)
                return
        # Nowhere to put it: a file is deleted so that it can never block or be published;
        # a directory is left where it is (not ours to delete) and skipped at every start.
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
            if not is_dir:
                os.unlink(path)
        except OSError as exc:
            logger.error(
                "spool: skipping %s (%s); it cannot be moved or deleted: %s", path.name, reason, exc.strerror or exc
            )
            return
        logger.error(
            "spool: %s %s (%s); %d quarantined since start",
            "skipping" if is_dir else "deleted",
            path.name,
            reason,
            self.quarantined,
        )

    def _quarantine_target(self, name: str) -> Path | None:
        folder = self.directory / QUARANTINE_DIR
        try:
            try:
                mode = os.lstat(folder).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not stat.S_ISDIR(mode):
                # The name is the spool's own; a file, link or FIFO there is damage. Unlinking
                # a link leaves its target alone.
                logger.error("spool: removing %s, %s where the quarantine folder belongs", folder, _kind(mode))
                os.unlink(folder)
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            if not self._quarantine_warned:
                self._quarantine_warned = True
                logger.error(
                    "spool: cannot use %s (%s); poison messages are deleted instead", folder, exc.strerror or exc
                )
            return None
        for attempt in range(1000):
            target = folder / (name if attempt == 0 else f"{name}.{attempt}")
            if not os.path.lexists(target):
                return target
        return None

    def _prune_quarantine(self, folder: Path) -> None:
        """Keep the newest QUARANTINE_MAX_FILES entries (by the time they were moved there)."""
        try:
            names = os.listdir(folder)
            if len(names) <= QUARANTINE_MAX_FILES:
                return
            moved = sorted(names, key=lambda n: os.lstat(folder / n).st_ctime_ns)
        except OSError:
            return
        for name in moved[: len(moved) - QUARANTINE_MAX_FILES]:
            path = folder / name
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                pass

    def _make_room(self, size: int) -> None:
        dropped = 0
        while self._entries and self._bytes + size > self.max_bytes:
            self._drop(self._entries[min(self._entries)])
            dropped += 1
        if dropped:
            self._count_drop(dropped, f"spool full ({self.max_bytes} bytes)")

    def _drop(self, entry: SpoolEntry) -> None:
        if self._take(entry):
            self._unlink(entry.path)

    def _take(self, entry: SpoolEntry) -> bool:
        """Remove an entry from the queue's books; False if it was not there."""
        if self._entries.pop(entry.number, None) is None:
            return False
        self._bytes -= entry.size_bytes
        self._unsaved -= entry.path is None
        return True

    def _count_drop(self, count: int, why: str) -> None:
        self.dropped += count
        logger.error("spool: dropped %d message(s): %s (%d dropped since start)", count, why, self.dropped)

    @staticmethod
    def _unlink(path: Path | None) -> None:
        if path is None:
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # read-only or failing disk: the message may be delivered again after a restart
            logger.error("spool: cannot delete %s: %s", path, exc.strerror or exc)


def default_spool_root(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """Where spools live when mqtt.spool_dir is null.

    Under systemd (StateDirectory=acmon sets $STATE_DIRECTORY) that is
    /var/lib/acmon/spool; otherwise $XDG_STATE_HOME/acmon/spool, by default
    ~/.local/state/acmon/spool.
    """
    state = environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "spool"
    xdg = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "acmon" / "spool"


def spool_directory(root: str | os.PathLike | None, base_topic: str) -> Path:
    """The spool of one device: <root>/<base topic levels>, so devices sharing a root never share a spool.

    Raises:
        ValueError: a topic level that is empty, '.' or '..' (it would escape the root).
    """
    levels = base_topic.split("/")
    if any(level in ("", ".", "..") for level in levels):
        raise ValueError(f"topic {base_topic!r} cannot name a spool folder (empty, '.' or '..' level)")
    return Path(root if root is not None else default_spool_root()).joinpath(*levels)


def remove_empty_parents(directory: Path, root: Path) -> None:
    """Delete `directory`'s empty ancestors below `root` (a delivered spool leaves no folders behind)."""
    for parent in directory.parents:
        if parent == root or root not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:
            return  # not empty: another device's spool lives there
