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
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import AcmonError

logger = logging.getLogger(__name__)

SUFFIX = ".msg"
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
_NAME_DIGITS = 16


@dataclass(frozen=True)
class SpoolEntry:
    """One stored message: its file, order number, topic, payload and when it was written."""

    number: int
    path: Path
    topic: str
    payload: bytes
    created_seconds: float  # wall clock (time.time()), from the file's mtime

    @property
    def size_bytes(self) -> int:
        return len(self.topic.encode()) + 1 + len(self.payload)


@dataclass(frozen=True)
class SpoolStats:
    """What telemetry reports: messages waiting, and messages dropped since this process started."""

    pending: int
    dropped: int
    bytes: int


def entry_name(number: int) -> str:
    """File name of message `number`; lexical order is numeric order."""
    return f"{number:0{_NAME_DIGITS}d}{SUFFIX}"


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
    return topic.decode("utf-8"), payload


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = self._lock()
        self._entries: dict[int, SpoolEntry] = {}
        self._bytes = 0
        self.dropped = 0
        self._next = 0
        for entry in self._load():
            self._entries[entry.number] = entry
            self._bytes += entry.size_bytes
            self._next = entry.number + 1
        self.expire()

    # -- public ----------------------------------------------------------

    def append(self, topic: str, payload: bytes) -> SpoolEntry | None:
        """Store a message durably (fsync'd) and return it; None if it alone exceeds max_bytes (dropped).

        Older messages are dropped first if needed to stay within max_bytes.
        """
        data = encode_entry(topic, payload)
        if len(data) > self.max_bytes:
            self._count_drop(1, "a message larger than the whole spool")
            return None
        self._make_room(len(data))
        number = self._next
        self._next += 1
        path = self.directory / entry_name(number)
        tmp = path.with_suffix(TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        entry = SpoolEntry(number, path, topic, payload, self._clock())
        self._entries[number] = entry
        self._bytes += entry.size_bytes
        return entry

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a delivered message (unlink). A message already dropped is ignored."""
        if self._entries.pop(entry.number, None) is None:
            return
        self._bytes -= entry.size_bytes
        self._unlink(entry.path)

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
        return SpoolStats(len(self._entries), self.dropped, self._bytes)

    def close(self, remove_if_empty: bool = True) -> None:
        """Release the lock; with nothing left, delete the directory (and its empty parents are left alone)."""
        if self._lock_fd is None:
            return
        if remove_if_empty and not self._entries:
            self._unlink(self.directory / LOCK_NAME)
            try:
                self.directory.rmdir()
            except OSError:
                pass  # something else lives there; leave it
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- internals ---------------------------------------------------------

    def _lock(self) -> int:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AcmonError(
                    f"spool {self.directory} is in use by another process: "
                    "two daemons with the same site and device id?"
                ) from None
            raise
        return fd

    def _load(self) -> list[SpoolEntry]:
        """Entries left by a previous run, in order; half-written and unreadable files are deleted."""
        for tmp in self.directory.glob(f"*{TMP_SUFFIX}"):
            logger.warning("spool: deleting %s, half written when the last run stopped", tmp.name)
            self._unlink(tmp)
        entries = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                number = int(path.stem)
                topic, payload = decode_entry(path.read_bytes())
                created = path.stat().st_mtime
            except (ValueError, OSError) as exc:
                logger.error("spool: dropping unreadable %s (%s)", path.name, exc)
                self._unlink(path)
                self.dropped += 1
                continue
            entries.append(SpoolEntry(number, path, topic, payload, created))
        if entries:
            logger.info("spool: %d message(s) from a previous run to deliver first", len(entries))
        return entries

    def _make_room(self, size: int) -> None:
        dropped = 0
        while self._entries and self._bytes + size > self.max_bytes:
            self._drop(self._entries[min(self._entries)])
            dropped += 1
        if dropped:
            self._count_drop(dropped, f"spool full ({self.max_bytes} bytes)")

    def _drop(self, entry: SpoolEntry) -> None:
        self._entries.pop(entry.number, None)
        self._bytes -= entry.size_bytes
        self._unlink(entry.path)

    def _count_drop(self, count: int, why: str) -> None:
        self.dropped += count
        logger.error("spool: dropped %d message(s): %s (%d dropped since start)", count, why, self.dropped)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


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
