"""The on-disk spool: order across restarts, crash leftovers, size and age bounds, one process per spool."""

from __future__ import annotations

import errno
import os

import pytest

from device.errors import AcmonError
from device.mqtt.publisher import backoff_seconds
from device.mqtt.spool import (
    LOCK_NAME,
    QUARANTINE_DIR,
    QUARANTINE_MAX_FILES,
    Spool,
    decode_entry,
    encode_entry,
    entry_name,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_entries_survive_a_restart_in_order(tmp_path):
    spool = Spool(tmp_path, 10**6, 3600)
    for i in range(12):
        spool.append("a/b/events", f"m{i}".encode())
    spool.remove(spool.pending()[0])
    spool.close()
    again = Spool(tmp_path, 10**6, 3600)
    assert [e.payload for e in again.pending()] == [f"m{i}".encode() for i in range(1, 12)]
    new = again.append("a/b/events", b"m12")
    assert new.number == 12 and again.pending()[-1] == new
    again.close()


def test_half_written_files_are_deleted_and_corrupt_ones_quarantined_at_start(tmp_path):
    (tmp_path / (entry_name(0)[:-4] + ".tmp")).write_bytes(b"a/b/ev")  # power cut mid-write
    (tmp_path / entry_name(1)).write_bytes(b"no topic line")
    (tmp_path / entry_name(2)).write_bytes(encode_entry("a/b/events", b"{}"))
    spool = Spool(tmp_path, 10**6, 3600)
    assert [e.number for e in spool.pending()] == [2]
    assert spool.stats.quarantined == 1 and spool.stats.dropped == 0
    assert not list(tmp_path.glob("*.tmp"))
    spool.close()


def test_size_bound_drops_the_oldest(tmp_path):
    spool = Spool(tmp_path, max_bytes=3 * len(encode_entry("t", b"x" * 10)), max_age_seconds=3600)
    for i in range(5):
        spool.append("t", bytes([48 + i]) * 10)
    assert [e.payload[:1] for e in spool.pending()] == [b"2", b"3", b"4"]
    assert spool.stats == type(spool.stats)(pending=3, dropped=2, bytes=3 * 12)
    assert spool.append("t", b"y" * 1000) is None and spool.stats.dropped == 3
    spool.close(remove_if_empty=False)


def test_age_bound_drops_old_messages(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path, 10**6, max_age_seconds=60, clock=clock)
    spool.append("t", b"old")
    clock.now += 61
    spool.append("t", b"new")
    assert spool.expire() == 1
    assert [e.payload for e in spool.pending()] == [b"new"] and spool.stats.dropped == 1
    spool.close(remove_if_empty=False)


def test_a_second_process_cannot_share_a_spool(tmp_path):
    first = Spool(tmp_path / "s", 10**6, 3600)
    with pytest.raises(AcmonError, match="in use by another process"):
        Spool(tmp_path / "s", 10**6, 3600)
    first.close()
    assert not (tmp_path / "s").exists()  # empty spool folders are removed on close


def test_entry_encoding_round_trip():
    assert decode_entry(encode_entry("a/b", b'{"x":\n1}')) == ("a/b", b'{"x":\n1}')
    with pytest.raises(ValueError):
        encode_entry("a\nb", b"")


@pytest.mark.parametrize("failures", range(12))
def test_backoff_doubles_is_capped_and_jittered(failures):
    low = backoff_seconds(failures, 1.0, 60.0, uniform=lambda: 0.0)
    high = backoff_seconds(failures, 1.0, 60.0, uniform=lambda: 0.999999)
    nominal = min(60.0, 2.0**failures)
    assert low == pytest.approx(nominal / 2) and high == pytest.approx(nominal, rel=1e-5)


# -- poison and damage (issue 11) ---------------------------------------------------

TOPIC = "acmon/plant-a/pump-7/events"
PREFIX = "acmon/plant-a/pump-7/"


def _json_object(payload: bytes) -> str | None:
    """Deliberately naive (json.loads recurses): the spool must survive a check that raises."""
    import json

    try:
        return None if isinstance(json.loads(payload), dict) else "payload is not an object"
    except ValueError:
        return "payload is not JSON"


def _spool(directory, **kwargs) -> Spool:
    return Spool(directory, 10**6, 3600, topic_prefix=PREFIX, check_payload=_json_object, **kwargs)


def _write(directory, number: int, topic: str | bytes, payload: bytes = b'{"seq": 0}') -> None:
    raw_topic = topic.encode() if isinstance(topic, str) else topic
    (directory / entry_name(number)).write_bytes(raw_topic + b"\n" + payload)


@pytest.mark.parametrize(
    "topic, reason",
    [
        (TOPIC + "/#", "wildcard"),
        (TOPIC + "/+", "wildcard"),
        (TOPIC + "/a\x00b", "U+0000"),
        (TOPIC + "/" + "x" * 70_000, "bytes long"),
        (TOPIC + "/\x1b[31m", "U+001B"),
        (TOPIC + "/\ufffe", "U+FFFE"),
        (b"acmon/plant-a/pump-7/\xff\xfe", "not UTF-8"),
        ("$SYS/broker/x", "reserved"),
        ("acmon/plant-a/pump-8/events", "outside"),
    ],
)
def test_poison_topics_are_quarantined_and_the_rest_kept_in_order(tmp_path, topic, reason, caplog):
    _write(tmp_path, 1, TOPIC, b'{"seq": 1}')
    _write(tmp_path, 2, topic)
    _write(tmp_path, 3, TOPIC, b'{"seq": 3}')
    spool = _spool(tmp_path)
    assert [e.payload for e in spool.pending()] == [b'{"seq": 1}', b'{"seq": 3}']
    assert spool.stats.quarantined == 1 and spool.stats.dropped == 0
    assert [p.name for p in (tmp_path / QUARANTINE_DIR).iterdir()] == [entry_name(2)]
    assert any(reason in r.getMessage() and "quarantined" in r.getMessage() for r in caplog.records)
    # The next start finds a clean spool: the poison is not looked at again.
    spool.close()
    assert _spool(tmp_path).stats.quarantined == 0


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", "payload"),
        (b"[1, 2]", "payload"),
        (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "payload"),
        (b"\xff\xfe{}", "payload"),
    ],
)
def test_payloads_the_check_refuses_are_quarantined(tmp_path, payload, reason, caplog):
    _write(tmp_path, 1, TOPIC, payload)
    spool = _spool(tmp_path)
    assert spool.pending() == [] and spool.stats.quarantined == 1
    spool.close(remove_if_empty=False)


def test_a_damaged_spool_never_blocks_start_up(tmp_path, caplog):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(TOPIC.encode() + b'\n{"stolen": true}')
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / LOCK_NAME).mkdir()  # a .lock directory crashed start-up
    (spool_dir / entry_name(1)).mkdir()  # so did a directory named *.msg
    (spool_dir / entry_name(2)).symlink_to(outside)  # a linked .msg was followed and published
    os.mkfifo(spool_dir / entry_name(3))  # reading a FIFO would block start-up forever
    _write(spool_dir, 4, TOPIC, b'{"seq": 4}')
    (spool_dir / entry_name(5)).write_bytes(b"")  # empty
    (spool_dir / entry_name(6)).write_bytes(os.urandom(64).replace(b"\n", b""))  # garbage, no topic line
    (spool_dir / "1.msg").write_bytes(TOPIC.encode() + b"\n{}")  # not a name the spool writes
    (spool_dir / "x.msg").write_bytes(b"")
    (spool_dir / (entry_name(7)[:-4] + ".tmp")).mkdir()  # a directory where a leftover .tmp would be
    with open(spool_dir / entry_name(8), "wb") as f:  # 1 GB (sparse): must not be read into memory
        f.truncate(10**9)
    _write(spool_dir, 9, TOPIC, b'{"seq": 9}')
    (spool_dir / "notes.txt").write_text("not ours: left alone")
    spool = _spool(spool_dir)
    assert [e.payload for e in spool.pending()] == [b'{"seq": 4}', b'{"seq": 9}']
    assert spool.stats.quarantined == 10
    assert outside.read_bytes().endswith(b'{"stolen": true}')  # the link's target is untouched
    assert (spool_dir / "notes.txt").exists()
    assert sorted(p.name for p in spool_dir.iterdir()) == sorted(
        [LOCK_NAME, QUARANTINE_DIR, entry_name(4), entry_name(9), "notes.txt"]
    )
    assert (spool_dir / LOCK_NAME).is_file()
    # Appending continues after the highest number seen, whatever became of that file.
    assert spool.append(TOPIC, b'{"seq": 10}').number == 10
    spool.close()
    again = _spool(spool_dir)
    assert [e.number for e in again.pending()] == [4, 9, 10] and again.stats.quarantined == 0
    again.close(remove_if_empty=False)


def test_a_linked_lock_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / LOCK_NAME).symlink_to(target)
    spool = _spool(spool_dir)
    assert not (spool_dir / LOCK_NAME).is_symlink() and target.read_text() == "keep me"
    spool.close()


def test_unreadable_entries_are_quarantined(tmp_path, monkeypatch):
    """Permission errors cannot be made as root, so os.open refuses one file here."""
    _write(tmp_path, 1, TOPIC, b'{"seq": 1}')
    _write(tmp_path, 2, TOPIC, b'{"seq": 2}')
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).endswith(entry_name(1)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    spool = _spool(tmp_path)
    assert [e.number for e in spool.pending()] == [2] and spool.stats.quarantined == 1
    spool.close(remove_if_empty=False)


def test_quarantine_is_bounded(tmp_path):
    for number in range(QUARANTINE_MAX_FILES + 30):
        _write(tmp_path, number, TOPIC + "/#")
    spool = _spool(tmp_path)
    assert spool.stats.quarantined == QUARANTINE_MAX_FILES + 30
    assert len(list((tmp_path / QUARANTINE_DIR).iterdir())) == QUARANTINE_MAX_FILES
    spool.close(remove_if_empty=False)


def test_an_unusable_quarantine_folder_deletes_poison_instead(tmp_path):
    (tmp_path / QUARANTINE_DIR).write_text("a file where the folder should be")
    _write(tmp_path, 1, TOPIC + "/#")
    _write(tmp_path, 2, TOPIC)
    spool = _spool(tmp_path)
    assert [e.number for e in spool.pending()] == [2] and spool.stats.quarantined == 1
    assert not (tmp_path / entry_name(1)).exists()
    spool.close(remove_if_empty=False)


def test_quarantine_an_entry_the_broker_refuses(tmp_path):
    spool = _spool(tmp_path)
    first = spool.append(TOPIC, b'{"seq": 1}')
    second = spool.append(TOPIC, b'{"seq": 2}')
    spool.quarantine(first, "the broker closed the connection 5 times while it was being delivered")
    assert spool.pending() == [second] and not spool.contains(first)
    assert spool.stats.quarantined == 1 and spool.stats.pending == 1
    assert (tmp_path / QUARANTINE_DIR / entry_name(first.number)).exists()
    spool.close(remove_if_empty=False)


def test_append_refuses_what_could_never_be_published(tmp_path):
    spool = _spool(tmp_path)
    assert spool.append(TOPIC + "/#", b"{}") is None
    assert spool.append(TOPIC, b"no json") is None
    assert spool.append("elsewhere/events", b"{}") is None
    assert spool.stats.dropped == 3 and spool.pending() == []
    spool.close()


def test_a_disk_that_fails_keeps_messages_in_memory(tmp_path, monkeypatch, caplog):
    """ENOSPC cannot be had without a small filesystem, so os.fsync fails here for a while."""
    spool = _spool(tmp_path)
    real_fsync = os.fsync
    failing = {"on": True}

    def fsync(fd):
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    kept = spool.append(TOPIC, b'{"seq": 1}')
    assert kept is not None and kept.path is None and spool.pending() == [kept]
    assert spool.stats.unsaved == 1 and "No space left" in spool.stats.problem
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.msg"))
    failing["on"] = False
    saved = spool.append(TOPIC, b'{"seq": 2}')
    assert saved.path is not None and saved.path.exists() and spool.stats.problem is None
    spool.remove(kept)
    spool.remove(saved)
    assert spool.stats.pending == 0 and spool.stats.unsaved == 0
    spool.close()


def test_a_spool_folder_that_cannot_be_created_runs_in_memory(tmp_path):
    (tmp_path / "file").write_text("a file where the spool's parent should be")
    spool = _spool(tmp_path / "file" / "spool")
    assert spool.stats.problem is not None and "cannot create" in spool.stats.problem
    entry = spool.append(TOPIC, b'{"seq": 1}')
    assert entry is not None and spool.pending() == [entry]
    spool.remove(entry)
    spool.close()


def test_a_locked_spool_is_still_refused(tmp_path):
    """Damage never blocks start-up, but a second daemon on the same spool still does."""
    first = _spool(tmp_path / "s")
    with pytest.raises(AcmonError, match="in use by another process"):
        _spool(tmp_path / "s")
    first.close()
