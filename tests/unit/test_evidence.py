"""Evidence clips: pre/post-roll from the ring buffer, a real PNG beside each WAV, and the disk quota."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.audio.audio_io import read_wav
from device.audio.ring_buffer import RingBuffer
from device.evidence.clips import EvidenceRecorder, enforce_quota
from device.evidence.png import encode_png, spectrogram_rgb

PARAMS = FeatureParams()
RATE = PARAMS.sample_rate_hz


def _decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for 8-bit RGB, filter 0 (what encode_png writes), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trips():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png(image)), image)


def test_spectrogram_image_puts_low_bands_at_the_bottom():
    logmel = np.full((10, PARAMS.n_mels), -90.0)
    logmel[:, 0] = 0.0  # loud lowest band
    img = spectrogram_rgb(logmel, scale=1)
    assert img.shape == (PARAMS.n_mels, 10, 3)
    assert img[-1].sum() > img[0].sum()


def _stream(recorder: EvidenceRecorder, ring: RingBuffer, seconds: float, block: int = 1000) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    x = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i in range(0, len(x), block):
        ring.push(x[i : i + block])
        recorder.poll(ring)


def test_clip_spans_pre_and_post_roll(tmp_path):
    rec = EvidenceRecorder(tmp_path, PARAMS, pre_roll_seconds=2.0, post_roll_seconds=3.0, quota_mb=10)
    ring = RingBuffer(PARAMS.window_samples, PARAMS.hop_samples, capacity_samples=int(rec.history_seconds * RATE))
    _stream(rec, ring, 10.0)
    name = rec.start("abc123", start_seconds=10.0, wall_time=0.0)
    assert name == "19700101T000000Z_abc123.wav" and not (tmp_path / name).exists()  # waits for its post-roll
    _stream(rec, ring, 5.0)
    samples, rate = read_wav(tmp_path / name)
    assert rate == RATE and len(samples) == 5 * RATE
    assert (tmp_path / "19700101T000000Z_abc123.png").read_bytes().startswith(b"\x89PNG")


def test_flush_writes_a_clip_cut_short_by_the_end_of_the_stream(tmp_path):
    rec = EvidenceRecorder(tmp_path, PARAMS, pre_roll_seconds=2.0, post_roll_seconds=3.0, quota_mb=10)
    ring = RingBuffer(PARAMS.window_samples, PARAMS.hop_samples, capacity_samples=int(rec.history_seconds * RATE))
    _stream(rec, ring, 4.0)
    name = rec.start("short", start_seconds=4.0, wall_time=0.0)
    rec.flush(ring)
    samples, _ = read_wav(tmp_path / name)
    assert len(samples) == 2 * RATE


def test_quota_removes_oldest_clips_first(tmp_path):
    rec = EvidenceRecorder(tmp_path, PARAMS, pre_roll_seconds=1.0, post_roll_seconds=1.0, quota_mb=0.2)
    ring = RingBuffer(PARAMS.window_samples, PARAMS.hop_samples, capacity_samples=int(rec.history_seconds * RATE))
    _stream(rec, ring, 2.0)
    names = []
    for k in range(6):  # each clip: 2 s of int16 (64 kB) plus its PNG
        names.append(rec.start(f"ev{k}", start_seconds=(ring.samples_written / RATE), wall_time=1000.0 + k))
        _stream(rec, ring, 1.5)
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= 200_000
    present = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert present == sorted(names[-len(present) :])  # the newest survive
    assert len(present) < 6
    # Every surviving WAV keeps its PNG: they are removed together.
    assert {p.stem for p in tmp_path.glob("*.png")} == {p.stem for p in tmp_path.glob("*.wav")}


def test_quota_keeps_the_newest_clip_even_if_it_alone_is_too_big(tmp_path):
    for stem in ("20200101T000000Z_a", "20200101T000001Z_b"):
        (tmp_path / f"{stem}.wav").write_bytes(b"x" * 1000)
    removed = enforce_quota(tmp_path, 10, keep=frozenset({"20200101T000001Z_b"}))
    assert [p.name for p in removed] == ["20200101T000000Z_a.wav"]
    assert os.listdir(tmp_path) == ["20200101T000001Z_b.wav"]


def test_default_directory_is_the_state_folder_not_the_working_directory(tmp_path):
    from device.evidence.clips import default_evidence_directory

    assert default_evidence_directory({"STATE_DIRECTORY": "/var/lib/acmon"}) == Path("/var/lib/acmon/evidence")
    assert default_evidence_directory({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "acmon" / "evidence"
    assert default_evidence_directory({"HOME": "/home/pi"}) == Path("/home/pi/.local/state/acmon/evidence")


def test_retention_by_count_and_age_removes_wav_and_png_together(tmp_path):
    import calendar
    import time as _time

    stems = [f"2020010{d}T000000Z_{d:012x}" for d in range(1, 7)]
    for stem in stems:
        (tmp_path / f"{stem}.wav").write_bytes(b"x")
        (tmp_path / f"{stem}.png").write_bytes(b"y")
    (tmp_path / "notes.txt").write_text("kept")  # not evidence
    removed = enforce_quota(tmp_path, 10**9, max_clips=4)
    assert sorted({p.stem for p in removed}) == stems[:2]
    now = calendar.timegm(_time.strptime("20200106T120000Z", "%Y%m%dT%H%M%SZ"))
    removed = enforce_quota(tmp_path, 10**9, max_age_seconds=2.0 * 86400, now=now)  # older than Jan 4, 12:00
    assert sorted({p.stem for p in removed}) == stems[2:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{s}.{x}" for s in stems[4:] for x in ("wav", "png")] + ["notes.txt"]
    )
    # The clip just written is kept whatever the limits say; a name without a time goes by its file's age.
    odd = tmp_path / "renamed.wav"
    odd.write_bytes(b"z")
    os.utime(odd, (0, 0))
    removed = enforce_quota(tmp_path, 10**9, keep=frozenset({stems[5]}), max_clips=1, max_age_seconds=1.0, now=now)
    assert {p.stem for p in removed} == {stems[4], "renamed"}


def test_evidence_files_of_an_event_refuse_what_is_not_an_event_id(tmp_path):
    from device.evidence.clips import evidence_files

    (tmp_path / "20200101T000000Z_0123456789ab.wav").write_bytes(b"x")
    (tmp_path / "20200101T000000Z_0123456789ab.png").write_bytes(b"x")
    assert [p.suffix for p in evidence_files(tmp_path, "0123456789ab" + "0" * 20)] == [".png", ".wav"]
    assert evidence_files(tmp_path, "f" * 32) == []
    for bad in ("../x", "*" * 32, "0123456789AB" + "0" * 20, ""):
        with pytest.raises(ValueError):
            evidence_files(tmp_path, bad)


def test_flac_clips_hold_the_same_samples_as_wav_and_are_smaller(tmp_path):
    import soundfile

    from device.audio.audio_io import read_wav

    clips = {}
    for fmt in ("wav", "flac"):
        folder = tmp_path / fmt
        rec = EvidenceRecorder(folder, PARAMS, 1.0, 1.0, quota_mb=10, audio_format=fmt)
        ring = RingBuffer(PARAMS.window_samples, PARAMS.hop_samples, capacity_samples=int(rec.history_seconds * RATE))
        _stream(rec, ring, 2.0)
        name = rec.start("a" * 32, start_seconds=ring.samples_written / RATE, wall_time=1000.0)
        assert name.endswith(f".{fmt}")
        _stream(rec, ring, 1.5)
        clips[fmt] = folder / name
        assert clips[fmt].with_suffix(".png").exists()
    wav, rate = read_wav(clips["wav"])
    flac, flac_rate = soundfile.read(str(clips["flac"]), dtype="int16")
    assert flac_rate == rate and np.array_equal(np.round(wav.reshape(-1) * 32768).astype(np.int16), flac)
    assert clips["flac"].stat().st_size < clips["wav"].stat().st_size


def test_flac_without_soundfile_falls_back_to_wav(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_soundfile(name, *args, **kwargs):
        if name == "soundfile":
            raise ImportError("not installed here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_soundfile)
    rec = EvidenceRecorder(tmp_path, PARAMS, 1.0, 1.0, quota_mb=10, audio_format="flac")
    assert rec.suffix == ".wav"


def test_evidence_names_cover_every_clip_format_and_nothing_else(tmp_path):
    from device.daemon.web import CONTENT_TYPES
    from device.evidence.clips import EVIDENCE_NAME, EVIDENCE_SUFFIXES, evidence_files

    assert set(CONTENT_TYPES) == set(EVIDENCE_SUFFIXES)  # the page can serve every file evidence writes
    for name in (
        "20200101T000000Z_0123456789ab.wav",
        "20200101T000000Z_0123456789ab.flac",
        "20200101T000000Z_0123456789ab.png",
    ):
        assert EVIDENCE_NAME.fullmatch(name), name
    for name in (
        "20200101T000000Z_0123456789ab.txt",
        "20200101T000000Z_0123456789AB.wav",
        "../x.wav",
        "x.wav",
        "20200101T000000Z_0123456789ab.wav/../../etc",
    ):
        assert not EVIDENCE_NAME.fullmatch(name), name
    (tmp_path / "20200101T000000Z_0123456789ab.flac").write_bytes(b"x")
    assert [p.suffix for p in evidence_files(tmp_path, "0123456789ab" + "0" * 20)] == [".flac"]
