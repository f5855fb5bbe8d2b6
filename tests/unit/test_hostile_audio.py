"""Hostile audio at the edge: WAV headers that lie, samples that are not numbers, and a property test.

Every case must end in audio or one AudioError line naming the file, quickly and in bounded memory.
"""

from __future__ import annotations

import logging
import signal
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.audio.audio_io import (
    MAX_CHANNELS,
    MAX_RESAMPLE_FACTOR,
    MAX_SAMPLE_MAGNITUDE,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    WavReader,
    read_wav,
    write_wav,
)
from device.audio.sources import RawPcmStream, WavFileStream
from device.errors import AcmonError, AudioError
from training.datasets import ClipRecord, load_clip, load_records

RATE = 16000


def _chunk(chunk_id: bytes, body: bytes, declared_size: int | None = None) -> bytes:
    size = len(body) if declared_size is None else declared_size
    return chunk_id + struct.pack("<I", size) + body + (b"\x00" if len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt(
    channels: int = 1,
    rate: int = RATE,
    bits: int = 16,
    tag: int = 1,
    byte_rate: int | None = None,
    block_align: int | None = None,
) -> bytes:
    align = channels * bits // 8 if block_align is None else block_align
    rate_bytes = rate * align if byte_rate is None else byte_rate
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate_bytes & 0xFFFFFFFF, align & 0xFFFF, bits))


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def _pcm16_wav(path: Path, rate: int, seconds: float = 1.0, channels: int = 1, byte_rate: int | None = None) -> Path:
    """16-bit PCM whose header carries any rate and channel count (what a damaged or hostile file holds)."""
    x = (np.random.default_rng(0).standard_normal(int(16000 * seconds) * channels) * 3000).astype("<i2")
    path.write_bytes(_riff(_fmt(channels=channels, rate=rate, byte_rate=byte_rate), _chunk(b"data", x.tobytes())))
    return path


def _one_line_error(exc: BaseException, path: Path, *fragments: str) -> str:
    message = str(exc)
    assert isinstance(exc, AcmonError), repr(exc)
    assert str(path) in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


# ------------------------------------------------------------------------------------ header fields


@pytest.mark.parametrize("rate", [1, 8, MIN_SAMPLE_RATE_HZ - 1, MAX_SAMPLE_RATE_HZ + 1, 0xFFFFFFFF])
def test_sample_rate_outside_the_sane_range_is_one_line_error(tmp_path, rate):
    path = _pcm16_wav(tmp_path / f"rate{rate}.wav", rate)
    with pytest.raises(AudioError) as e:
        WavReader(path)
    _one_line_error(e.value, path, f"sample rate of {rate} Hz", f"{MIN_SAMPLE_RATE_HZ}", f"{MAX_SAMPLE_RATE_HZ}")


@pytest.mark.parametrize("rate", [MIN_SAMPLE_RATE_HZ, 8000, 44100, 48000, MAX_SAMPLE_RATE_HZ])
def test_sample_rates_at_and_inside_the_bounds_are_read(tmp_path, rate):
    path = _pcm16_wav(tmp_path / "ok.wav", rate, seconds=0.1)
    with WavReader(path) as reader:
        assert reader.sample_rate_hz == rate and reader.n_frames == 1600


def test_rate_error_says_what_the_byte_rate_implies(tmp_path):
    """A header whose rate field alone is damaged: the byte rate still says 16000 Hz, so say so."""
    path = _pcm16_wav(tmp_path / "one_hz.wav", 1, byte_rate=32000)
    with pytest.raises(AudioError) as e:
        WavReader(path)
    _one_line_error(e.value, path, "sample rate of 1 Hz", "byte rate", "16000 Hz")


def test_one_hz_header_ends_the_stream_at_once(tmp_path):
    """Measured: a 1 Hz header made score/replay run for over 600 s (16000x upsampling); now one error, at once."""
    path = _pcm16_wav(tmp_path / "one_hz.wav", 1)
    started = time.monotonic()
    with pytest.raises(AudioError) as e:
        for _ in WavFileStream(path, RATE).blocks():
            pass
    assert time.monotonic() - started < 2.0
    _one_line_error(e.value, path, "sample rate of 1 Hz")


def test_one_hz_header_is_skipped_by_training_loads(tmp_path):
    """Measured: fit grew to 6 GB on a 1 Hz header. Loading names the file and goes on with the others."""
    bad = _pcm16_wav(tmp_path / "one_hz.wav", 1)
    good = tmp_path / "good.wav"
    write_wav(good, _noise(RATE), RATE)
    clips, report = load_records([ClipRecord(bad, "normal"), ClipRecord(good, "normal")], RATE)
    assert len(clips) == 1 and report.loaded == [good]
    assert report.failed[0][0] == bad and "sample rate of 1 Hz" in report.failed[0][1]


@pytest.mark.parametrize("channels", [MAX_CHANNELS + 1, 1000, 0xFFFF])
def test_channel_count_beyond_the_bound_is_one_line_error(tmp_path, channels):
    path = tmp_path / "many.wav"
    path.write_bytes(_riff(_fmt(channels=channels), _chunk(b"data", b"\x00" * 4 * channels)))
    with pytest.raises(AudioError) as e:
        WavReader(path)
    _one_line_error(e.value, path, f"{channels} channels", f"{MAX_CHANNELS}")


def test_channel_count_at_the_bound_is_read(tmp_path):
    path = _pcm16_wav(tmp_path / "array.wav", RATE, seconds=0.01, channels=MAX_CHANNELS)
    samples, _ = read_wav(path)
    assert samples.shape == (160, MAX_CHANNELS)


def test_fmt_chunk_claiming_the_whole_file_is_read_in_bounded_memory(tmp_path):
    """A fmt size field of 4 GB on a 4 MB file: the reader needs 40 bytes of it, not the file."""
    path = tmp_path / "fat_fmt.wav"
    body = struct.pack("<HHIIHH", 1, 1, RATE, 2 * RATE, 2, 16) + b"\x00" * (4 << 20)
    path.write_bytes(_riff(_chunk(b"fmt ", body, declared_size=0xFFFFFFF0)))
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as e:
            WavReader(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _one_line_error(e.value, path, "no 'data' chunk")
    assert peak < 256 * 1024, f"reading a header allocated {peak} bytes"


def test_thousands_of_chunks_are_refused_quickly(tmp_path):
    """Each empty chunk costs a seek and a read: a file of them would walk for minutes per gigabyte."""
    path = tmp_path / "chunky.wav"
    path.write_bytes(_riff(*(_chunk(b"junk", b"") for _ in range(20000)), _fmt(), _chunk(b"data", b"\x00" * 64)))
    started = time.monotonic()
    with pytest.raises(AudioError) as e:
        WavReader(path)
    assert time.monotonic() - started < 1.0
    _one_line_error(e.value, path, "chunks")


def test_a_few_hundred_chunks_are_fine(tmp_path):
    path = tmp_path / "tagged.wav"
    path.write_bytes(_riff(_fmt(), *(_chunk(b"LIST", b"abcd") for _ in range(300)), _chunk(b"data", b"\x00" * 64)))
    with WavReader(path) as reader:
        assert reader.n_frames == 32


def test_truncated_data_is_read_as_far_as_the_file_goes(tmp_path, caplog):
    """The choice for a lying data size: a recorder killed mid-write leaves exactly this, and the audio that is
    there is good. Read it, with one warning naming the file and both sizes (never allocate the claimed size)."""
    path = tmp_path / "cut.wav"
    path.write_bytes(_riff(_fmt(), _chunk(b"data", b"\x01\x00" * 100, declared_size=0x7FFFFFF0)))
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="device.audio.audio_io"):
            samples, _ = read_wav(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples.shape == (100, 1)
    assert peak < 256 * 1024
    assert "cut.wav" in caplog.text and "2147483632" in caplog.text


# ------------------------------------------------------------------------------- resampling ratio


@pytest.mark.parametrize("rate", [22051, 96001, 383999])
def test_rate_that_cannot_be_resampled_cheaply_is_one_line_error(tmp_path, rate):
    """Measured: 383999 Hz -> 16 kHz designs a 7.7-million-tap filter (860 MB, 4 s) before the first block."""
    path = _pcm16_wav(tmp_path / "odd.wav", rate, seconds=0.1)
    started = time.monotonic()
    with pytest.raises(AudioError) as e:
        next(iter(WavFileStream(path, RATE).blocks()))
    assert time.monotonic() - started < 1.0
    _one_line_error(e.value, path, f"{rate} Hz", f"{RATE} Hz", "sox")
    with pytest.raises(AudioError) as e:
        load_clip(path, RATE)
    _one_line_error(e.value, path, f"{rate} Hz", "sox")


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44056, 44100, 48000, 96000, 176400, 192000, 352800, 384000])
def test_every_rate_in_common_use_resamples(tmp_path, rate):
    path = _pcm16_wav(tmp_path / "common.wav", rate, seconds=0.2)
    total = sum(len(b) for b in WavFileStream(path, RATE).blocks())
    assert abs(total - round(3200 * RATE / rate)) <= 1


def test_raw_stream_refuses_a_rate_it_cannot_resample():
    with pytest.raises(AudioError, match=r"stdin.*22051 Hz"):
        next(iter(RawPcmStream(_BytesReader(b"\x00" * 64), 22051, RATE).blocks()))
    with pytest.raises(AudioError, match=r"stdin.*sample rate of 1 Hz"):
        RawPcmStream(_BytesReader(b"\x00" * 64), 1, RATE)
    with pytest.raises(AudioError, match=r"stdin.*1000 channels"):
        RawPcmStream(_BytesReader(b"\x00" * 64), RATE, RATE, channels=1000)


def test_resample_bound_covers_the_worst_common_rate():
    """44056 Hz (NTSC-locked audio) is the largest reduced ratio among rates in use: 2000/5507 against 16 kHz."""
    assert 5507 <= MAX_RESAMPLE_FACTOR


class _BytesReader:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


# ------------------------------------------------------------------------------- non-finite samples


def _float_wav(path: Path, x: np.ndarray, fmt: str = "float32") -> Path:
    if fmt == "float32":
        write_wav(path, x, RATE, "float32")
        return path
    data = np.asarray(x, "<f8").tobytes()
    path.write_bytes(_riff(_fmt(tag=3, bits=64), _chunk(b"data", data)))
    return path


@pytest.mark.parametrize("fmt", ["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -2e3])
def test_reader_counts_samples_that_are_not_audio(tmp_path, fmt, bad):
    x = _noise(RATE).astype(np.float64)
    x[[100, 5000, 5001]] = bad
    path = _float_wav(tmp_path / "bad.wav", x, fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast" leaking out of float64 -> float32
        with WavReader(path) as reader:
            while len(reader.read(1000)):
                pass
            assert reader.nonfinite_samples == 3
            assert reader.first_nonfinite_frame == 100


def test_loud_but_real_float_audio_is_not_counted(tmp_path):
    """Float WAVs may go past full scale (an unnormalized export); only |x| > MAX_SAMPLE_MAGNITUDE is absurd."""
    x = _noise(RATE) * 50
    x[7] = MAX_SAMPLE_MAGNITUDE
    path = _float_wav(tmp_path / "hot.wav", x)
    with WavReader(path) as reader:
        reader.read()
        assert reader.nonfinite_samples == 0 and reader.first_nonfinite_frame is None


def test_stream_of_a_file_with_nan_warns_naming_the_file(tmp_path, caplog):
    x = _noise(RATE * 2)
    x[RATE // 2 : RATE // 2 + 10] = np.nan
    path = _float_wav(tmp_path / "nan.wav", x)
    with caplog.at_level(logging.WARNING, logger="device.audio.sources"):
        blocks = list(WavFileStream(path, RATE).blocks())
    assert sum(len(b) for b in blocks) == 2 * RATE  # the stream still delivers the file; the pipeline gates
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "nan.wav" in warning[0] and "10 " in warning[0] and "0.500 s" in warning[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_training_load_names_and_skips_a_file_with_bad_samples(tmp_path, bad):
    x = _noise(RATE)
    x[RATE // 4] = bad
    bad_path = _float_wav(tmp_path / "broken.wav", x)
    good = tmp_path / "good.wav"
    write_wav(good, _noise(RATE, seed=1), RATE)
    with pytest.raises(AudioError) as e:
        load_clip(bad_path, RATE)
    _one_line_error(e.value, bad_path, "1 sample", "0.250 s")
    clips, report = load_records([ClipRecord(bad_path, "normal"), ClipRecord(good, "normal")], RATE)
    assert len(clips) == 1 and all(np.isfinite(c).all() for c in clips)
    assert [p for p, _ in report.failed] == [bad_path]


def test_training_load_of_a_span_checks_only_what_it_reads(tmp_path):
    """A NaN in the first second does not spoil a span that starts at 2 s (with the 48 kHz resampling margin too)."""
    x = _noise(3 * 48000)
    x[100] = np.nan
    path = tmp_path / "long.wav"
    write_wav(path, x, 48000, "float32")
    with pytest.raises(AudioError):  # the whole file holds the NaN
        load_clip(path, RATE)
    from training.datasets import load_record

    span = load_record(ClipRecord(path, "normal", start_seconds=2.0, end_seconds=3.0), RATE)
    assert len(span) == RATE and np.isfinite(span).all()


# --------------------------------------------------------------------------- property: random headers


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


_FIELDS = {  # offset in a canonical 44-byte PCM header -> struct format
    4: "<I",  # RIFF size
    16: "<I",  # fmt size
    20: "<H",  # format tag
    22: "<H",  # channels
    24: "<I",  # sample rate
    28: "<I",  # byte rate
    32: "<H",  # block align
    34: "<H",  # bits per sample
    40: "<I",  # data size
}
_INTERESTING = [
    0,
    1,
    2,
    3,
    8,
    16,
    24,
    32,
    64,
    65,
    999,
    1000,
    16000,
    44100,
    384000,
    384001,
    0x7FFF,
    0x8000,
    0xFFFF,
    0xFFFE,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFF0,
    0xFFFFFFFF,
]


@st.composite
def hostile_wavs(draw) -> bytes:
    """A valid WAV (any supported encoding), then header fields overwritten, bytes flipped, chunks added, cut."""
    tag, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
    channels = draw(st.integers(1, 4))
    rate = draw(st.sampled_from([8000, 16000, 44100, 48000]))
    n_frames = draw(st.integers(0, 64))
    data = draw(st.binary(min_size=n_frames * channels * bits // 8, max_size=n_frames * channels * bits // 8))
    chunk_ids = st.sampled_from([b"LIST", b"fact", b"junk", b"fmt ", b"data", b"\x00\x00\x00\x00"])
    chunk_sizes = st.sampled_from([None, 0, 1, 0xFFFFFFFF, 0x7FFFFFFF])  # None: the body's true size
    extra_chunks = draw(st.lists(st.tuples(chunk_ids, st.binary(max_size=24), chunk_sizes), max_size=3))
    at = draw(st.integers(0, 2))  # extra chunks before fmt, between fmt and data, or after data
    parts = [_fmt(channels=channels, rate=rate, bits=bits, tag=tag), _chunk(b"data", data)]
    parts[at:at] = [_chunk(cid, body, size) for cid, body, size in extra_chunks]
    out = bytearray(_riff(*parts))
    for offset, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(_FIELDS)), st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 0xFFFFFFFF))
            ),
            max_size=4,
        )
    ):
        if offset + struct.calcsize(_FIELDS[offset]) <= len(out):
            limit = 0xFFFF if _FIELDS[offset] == "<H" else 0xFFFFFFFF
            struct.pack_into(_FIELDS[offset], out, offset, value & limit)
    for position, byte in draw(st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=3)):
        if position < len(out):
            out[position] = byte
    cut = draw(st.one_of(st.none(), st.integers(0, len(out))))
    return bytes(out if cut is None else out[:cut])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(blob=hostile_wavs())
def test_any_header_gives_audio_or_one_audio_error(tmp_path, blob):
    """Through the reader and the replay stream: audio or AudioError, within 5 s and a few MB, nothing else."""
    path = tmp_path / "fuzz.wav"
    path.write_bytes(blob)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    tracemalloc.start()
    try:
        try:
            with WavReader(path) as reader:
                samples = reader.read()
                assert samples.dtype == np.float32 and samples.shape == (reader.n_frames, reader.channels)
                assert samples.nbytes <= 8 * len(blob)
            for block in WavFileStream(path, RATE).blocks():
                assert block.dtype == np.float32 and block.ndim == 1
        except AudioError as exc:
            _one_line_error(exc, path)
        _, peak = tracemalloc.get_traced_memory()
    except _Timeout:
        pytest.fail(f"reading a {len(blob)}-byte file took over 5 s: {blob[:48]!r}")
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # The largest legitimate cost: the 44056 Hz-class resampling filter (~20 * MAX_RESAMPLE_FACTOR float64 taps).
    assert peak < 32 * 1024 * 1024, f"{peak} bytes for a {len(blob)}-byte file: {blob[:48]!r}"
