"""The on-disk spool: order across restarts, crash leftovers, size and age bounds, one process per spool."""

from __future__ import annotations

import pytest

from device.errors import AcmonError
from device.publisher import backoff_seconds
from device.spool import Spool, decode_entry, encode_entry, entry_name


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


def test_half_written_and_corrupt_files_are_dropped_at_start(tmp_path):
    (tmp_path / (entry_name(0)[:-4] + ".tmp")).write_bytes(b"a/b/ev")  # power cut mid-write
    (tmp_path / entry_name(1)).write_bytes(b"no topic line")
    (tmp_path / entry_name(2)).write_bytes(encode_entry("a/b/events", b"{}"))
    spool = Spool(tmp_path, 10**6, 3600)
    assert [e.number for e in spool.pending()] == [2]
    assert spool.stats.dropped == 1
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
