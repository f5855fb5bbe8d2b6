"""Tests for device.audio.audio_io: WAV round trips, odd but valid files, and one-line errors for bad ones."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

from device.audio.audio_io import WavReader, describe_wav, read_wav, to_mono, write_wav  # noqa: E402
from device.errors import AudioError  # noqa: E402

# Largest round-trip error per format: half a quantization step (plus float32
# rounding of the scaled value for 32-bit PCM).
TOLERANCE = {
    "uint8": 0.5 / 128 + 1e-7,
    "int16": 0.5 / 32768 + 1e-7,
    "int24": 0.5 / 8388608 + 1e-7,
    "int32": 1e-7,
    "float32": 0.0,
}
SAMPLE_FORMAT_READ = {
    "uint8": ("pcm_u8", 8),
    "int16": ("pcm_s16", 16),
    "int24": ("pcm_s24", 24),
    "int32": ("pcm_s32", 32),
    "float32": ("float32", 32),
}

PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _chunk(chunk_id: bytes, body: bytes, declared_size: int | None = None) -> bytes:
    size = len(body) if declared_size is None else declared_size
    return chunk_id + struct.pack("<I", size) + body + (b"\x00" if len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _fmt_pcm(channels: int = 1, sample_rate_hz: int = 16000, bits: int = 16, tag: int = 1) -> bytes:
    block_align = channels * bits // 8
    return _chunk(
        b"fmt ", struct.pack("<HHIIHH", tag, channels, sample_rate_hz, sample_rate_hz * block_align, block_align, bits)
    )


def _pcm16(values: list[int] | np.ndarray) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


def _write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _signal(n_frames: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.99, 0.99, size=(n_frames, channels))
    x[:4] = [[-1.0], [0.0], [0.5], [-0.5]]  # exact values and full scale
    return x


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sample_format", ["uint8", "int16", "int24", "int32", "float32"])
def test_round_trip(tmp_path, sample_format, channels):
    x = _signal(1001, channels)  # odd length: 8-bit mono and 24-bit need a pad byte
    path = tmp_path / f"rt_{sample_format}_{channels}.wav"
    write_wav(path, x[:, 0] if channels == 1 else x, 22050, sample_format=sample_format)
    y, sample_rate_hz = read_wav(path)
    assert sample_rate_hz == 22050
    assert y.dtype == np.float32 and y.shape == (1001, channels)
    expected = x.astype(np.float32) if sample_format == "float32" else x
    assert np.max(np.abs(y - expected)) <= TOLERANCE[sample_format]
    assert y[0, 0] == -1.0 and y[1, 0] == 0.0
    info = describe_wav(path)
    assert info == {
        "path": str(path),
        "sample_rate_hz": 22050,
        "channels": channels,
        "sample_format": SAMPLE_FORMAT_READ[sample_format][0],
        "bits_per_sample": SAMPLE_FORMAT_READ[sample_format][1],
        "n_frames": 1001,
        "duration_seconds": pytest.approx(1001 / 22050),
    }
    assert not os.path.exists(str(path) + ".tmp")
    # RIFF size and pad byte: the file length is exactly what the header says.
    data = path.read_bytes()
    assert struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    assert len(data) % 2 == 0


@pytest.mark.parametrize("sample_format,sampwidth", [("uint8", 1), ("int16", 2), ("int24", 3), ("int32", 4)])
def test_written_pcm_is_readable_by_stdlib_wave(tmp_path, sample_format, sampwidth):
    path = tmp_path / "std.wav"
    write_wav(path, _signal(100, 2), 8000, sample_format=sample_format)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, sampwidth, 8000, 100)


def test_float32_has_fact_chunk_and_format_tag_3(tmp_path):
    path = tmp_path / "f.wav"
    write_wav(path, np.zeros(10), 16000, sample_format="float32")
    data = path.read_bytes()
    assert struct.unpack("<H", data[20:22])[0] == 3
    i = data.index(b"fact")
    assert struct.unpack("<II", data[i + 4 : i + 12]) == (4, 10)


def test_clipping_and_rounding(tmp_path):
    path = tmp_path / "clip.wav"
    write_wav(path, np.array([2.0, -2.0, 1.0, 0.4 / 32768, 0.6 / 32768, np.nan]), 16000)
    y, _ = read_wav(path)
    assert y[:, 0].tolist() == [32767 / 32768, -1.0, 32767 / 32768, 0.0, 1 / 32768, 0.0]


def test_float64_wav_is_read_as_float32(tmp_path):
    x = np.array([0.25, -0.125, 1.5], dtype="<f8")
    fmt = _chunk(b"fmt ", struct.pack("<HHIIHHH", 3, 1, 8000, 8000 * 8, 8, 64, 0))
    path = _write_bytes(
        tmp_path, "f64.wav", _riff(fmt, _chunk(b"fact", struct.pack("<I", 3)), _chunk(b"data", x.tobytes()))
    )
    with WavReader(path) as r:
        assert r.sample_format == "float64" and r.bits_per_sample == 64
        y = r.read(10)
    assert y.dtype == np.float32 and y[:, 0].tolist() == [0.25, -0.125, 1.5]


def test_write_is_atomic_replace(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, np.zeros(5), 16000)
    write_wav(str(path), np.ones((7, 2)) * 0.5, 16000)
    y, _ = read_wav(path)
    assert y.shape == (7, 2)
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]


def test_write_into_missing_folder_is_audio_error(tmp_path):
    path = tmp_path / "no_such_dir" / "a.wav"
    with pytest.raises(AudioError) as e:
        write_wav(path, np.zeros(5), 16000)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# -------------------------------------------------------- valid unusual files


def test_wave_format_extensible_pcm24(tmp_path):
    channels, bits, rate = 2, 24, 48000
    block_align = channels * bits // 8
    fmt_body = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block_align, block_align, bits)
    fmt_body += struct.pack("<HHI", 22, 24, 0x3) + struct.pack("<H", 1) + PCM_GUID_TAIL
    values = np.array([[8388607, -8388608], [1, -1], [4194304, 0]], dtype=np.int32)
    data = values.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3].tobytes()
    path = _write_bytes(tmp_path, "ext.wav", _riff(_chunk(b"fmt ", fmt_body), _chunk(b"data", data)))
    with WavReader(path) as r:
        assert (r.sample_rate_hz, r.channels, r.sample_format, r.n_frames) == (rate, 2, "pcm_s24", 3)
        y = r.read(100)
    np.testing.assert_array_equal(y, (values / 8388608.0).astype(np.float32))


def test_wave_format_extensible_float(tmp_path):
    fmt_body = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 64000, 4, 32)
    fmt_body += struct.pack("<HHI", 22, 32, 0x4) + struct.pack("<H", 3) + PCM_GUID_TAIL
    x = np.array([0.5, -0.75], dtype="<f4")
    path = _write_bytes(tmp_path, "extf.wav", _riff(_chunk(b"fmt ", fmt_body), _chunk(b"data", x.tobytes())))
    y, rate = read_wav(path)
    assert rate == 16000 and y[:, 0].tolist() == [0.5, -0.75]


def test_unknown_and_odd_sized_chunks_are_skipped(tmp_path):
    samples = [1000, -2000, 3000, -32768, 32767]
    data = _riff(
        _chunk(b"JUNK", b"\x00" * 3),  # odd size: followed by a pad byte
        _fmt_pcm(),
        _chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00acmon\x00"),
        _chunk(b"bext", b"x" * 7),  # odd size again, right before data
        _chunk(b"data", _pcm16(samples)),
        _chunk(b"cue ", b"\x00" * 4),
    )
    path = _write_bytes(tmp_path, "chunks.wav", data)
    y, _ = read_wav(path)
    np.testing.assert_array_equal(y[:, 0], np.array(samples, dtype=np.float32) / 32768)


def test_fmt_after_data_is_found(tmp_path):
    path = _write_bytes(tmp_path, "late_fmt.wav", _riff(_chunk(b"data", _pcm16([5, 6])), _fmt_pcm()))
    y, _ = read_wav(path)
    assert y.shape == (2, 1)


def test_truncated_data_chunk_reads_what_is_there(tmp_path, caplog):
    # Declared 1000 frames of stereo 16-bit, but the recorder was killed after
    # 10 frames and half a sample.
    present = _pcm16(np.arange(20)) + b"\x01"
    data = _riff(_fmt_pcm(channels=2), _chunk(b"data", present, declared_size=4000))
    path = _write_bytes(tmp_path, "cut.wav", data[: len(data) - (len(present) % 2)])  # drop our pad byte
    with caplog.at_level(logging.WARNING, logger="device.audio.audio_io"):
        y, _ = read_wav(path)
    assert y.shape == (10, 2)
    np.testing.assert_array_equal(y.ravel(), np.arange(20, dtype=np.float32) / 32768)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut.wav" in warnings[0].getMessage()


def test_streamed_wav_with_unknown_size(tmp_path, caplog):
    data = _riff(_fmt_pcm(), b"data" + struct.pack("<I", 0xFFFFFFFF) + _pcm16([1, 2, 3]))
    path = _write_bytes(tmp_path, "stream.wav", data)
    with caplog.at_level(logging.WARNING, logger="device.audio.audio_io"):
        info = describe_wav(path)
    assert info["n_frames"] == 3
    assert any("0xFFFFFFFF" in r.getMessage() and "stream.wav" in r.getMessage() for r in caplog.records)


def test_data_size_not_a_whole_number_of_frames_is_truncated(tmp_path):
    path = _write_bytes(tmp_path, "odd.wav", _riff(_fmt_pcm(channels=2), _chunk(b"data", _pcm16([1, 2, 3]))))
    assert describe_wav(path)["n_frames"] == 1


def test_empty_data_chunk(tmp_path):
    path = _write_bytes(tmp_path, "silent.wav", _riff(_fmt_pcm(), _chunk(b"data", b"")))
    with WavReader(path) as r:
        assert r.n_frames == 0 and r.duration_seconds == 0.0
        assert r.read(10).shape == (0, 1)
    with pytest.raises(AudioError, match=r"silent\.wav: no audio samples \(0 frames\)"):
        read_wav(path)


def test_streamed_read_equals_whole_read(tmp_path):
    x = _signal(10007, 3, seed=1)
    path = tmp_path / "long.wav"
    write_wav(path, x, 44100, sample_format="int24")
    whole, _ = read_wav(path)
    for block in (1, 7, 1000, 4096):
        with WavReader(path) as r:
            parts = []
            while True:
                b = r.read(block)
                assert b.shape[1] == 3 and b.shape[0] <= block
                if b.shape[0] == 0:
                    break
                parts.append(b)
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_read_after_close_is_an_error(tmp_path):
    path = tmp_path / "c.wav"
    write_wav(path, np.zeros(4), 8000)
    r = WavReader(path)
    r.close()
    r.close()
    with pytest.raises(ValueError):
        r.read(1)


# --------------------------------------------------------------------- errors


def _assert_audio_error(path, *fragments: str) -> str:
    with pytest.raises(AudioError) as e:
        WavReader(path)
    message = str(e.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


def test_missing_file(tmp_path):
    _assert_audio_error(tmp_path / "missing.wav", "no such file")


def test_directory(tmp_path):
    _assert_audio_error(tmp_path, "directory")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "secret.wav"
    write_wav(path, np.zeros(4), 8000)
    if os.geteuid() == 0:
        # Root reads anything, and CI runs as root: simulate the kernel's refusal at open().
        import builtins

        real_open = builtins.open

        def refusing_open(file, mode="r", *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
        _assert_audio_error(path, "permission denied")
        return
    path.chmod(0)
    try:
        _assert_audio_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_empty_file(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "empty.wav", b""), "empty file")


def test_mp3(tmp_path):
    path = _write_bytes(tmp_path, "song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 200)
    message = _assert_audio_error(path, "not a WAV file", "MP3", "sox")
    assert "song.wav" in message  # the suggested conversion target


def test_flac(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "a.flac", b"fLaC" + b"\x00" * 100), "not a WAV file", "FLAC")


def test_text_file(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "notes.wav", b"hello\nworld\n"), "not a WAV file")


def test_tiny_file(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "tiny.wav", b"RIFF"), "not a WAV file")


def test_rifx_and_rf64(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "be.wav", b"RIFX" + b"\x00" * 40), "RIFX", "not supported", "sox")
    _assert_audio_error(
        _write_bytes(tmp_path, "big.wav", b"RF64" + b"\xff" * 4 + b"WAVE" + b"\x00" * 40),
        "RF64",
        "not supported",
        "sox",
    )


def test_no_fmt_chunk(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "nofmt.wav", _riff(_chunk(b"data", _pcm16([1, 2])))), "fmt")


def test_no_data_chunk(tmp_path):
    _assert_audio_error(_write_bytes(tmp_path, "nodata.wav", _riff(_fmt_pcm(), _chunk(b"LIST", b"abcd"))), "no 'data'")


def test_short_fmt_chunk(tmp_path):
    path = _write_bytes(tmp_path, "shortfmt.wav", _riff(_chunk(b"fmt ", b"\x01\x00\x01\x00"), _chunk(b"data", b"")))
    _assert_audio_error(path, "fmt")


@pytest.mark.parametrize(
    "tag,name", [(7, "0x0007 (mu-law)"), (2, "0x0002 (MS ADPCM)"), (6, "0x0006 (A-law)"), (0x1234, "0x1234")]
)
def test_unsupported_format_tag(tmp_path, tag, name):
    path = _write_bytes(tmp_path, "coded.wav", _riff(_fmt_pcm(bits=8, tag=tag), _chunk(b"data", b"\x00" * 10)))
    _assert_audio_error(path, name, "sox")


def test_unsupported_extensible_subformat(tmp_path):
    fmt_body = struct.pack("<HHIIHH", 0xFFFE, 1, 8000, 8000, 1, 8)
    fmt_body += struct.pack("<HHI", 22, 8, 0x4) + struct.pack("<H", 7) + PCM_GUID_TAIL
    path = _write_bytes(tmp_path, "extmu.wav", _riff(_chunk(b"fmt ", fmt_body), _chunk(b"data", b"\x00" * 4)))
    _assert_audio_error(path, "mu-law")


@pytest.mark.parametrize("tag,bits", [(1, 12), (1, 20), (1, 64), (3, 16), (3, 24)])
def test_unsupported_bit_depth(tmp_path, tag, bits):
    path = _write_bytes(tmp_path, "bits.wav", _riff(_fmt_pcm(bits=bits, tag=tag), _chunk(b"data", b"\x00" * 24)))
    _assert_audio_error(path, f"{bits}-bit", "bit depth")


def test_zero_channels_and_zero_rate(tmp_path):
    fmt0 = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16))
    _assert_audio_error(_write_bytes(tmp_path, "ch0.wav", _riff(fmt0, _chunk(b"data", b""))), "0 channels")
    _assert_audio_error(
        _write_bytes(tmp_path, "sr0.wav", _riff(_fmt_pcm(sample_rate_hz=0), _chunk(b"data", b""))), "sample rate of 0"
    )


def test_read_wav_and_describe_wav_raise_audio_error(tmp_path):
    path = _write_bytes(tmp_path, "bad.wav", b"garbage!" * 4)
    for func in (read_wav, describe_wav):
        with pytest.raises(AudioError, match=r"bad\.wav"):
            func(path)


def test_random_corruption_never_leaks_low_level_errors(tmp_path):
    good = tmp_path / "good.wav"
    write_wav(good, _signal(50, 2), 16000)
    original = good.read_bytes()
    rng = np.random.default_rng(3)
    for _ in range(300):
        data = bytearray(original)
        n_flips = int(rng.integers(1, 6))
        for pos in rng.integers(0, 60, size=n_flips):  # the header area
            data[pos] = int(rng.integers(0, 256))
        data = bytes(data[: int(rng.integers(0, len(data) + 1))])
        path = _write_bytes(tmp_path, "fuzz.wav", data)
        try:
            y, _ = read_wav(path)
        except AudioError as e:
            assert "fuzz.wav" in str(e) and "\n" not in str(e)
        else:
            assert y.dtype == np.float32 and y.ndim == 2


# -------------------------------------------------------------------- to_mono


def test_to_mono_mixes_down():
    x = np.array([[1.0, 0.0, -0.5], [0.5, 0.5, 0.5]], dtype=np.float32)
    y = to_mono(x)
    assert y.dtype == np.float32 and y.shape == (2,)
    np.testing.assert_allclose(y, [1 / 6, 0.5])


def test_to_mono_selects_channel():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(to_mono(x, channel=2), [2, 5, 8, 11])
    assert to_mono(x, channel=0).flags.c_contiguous


def test_to_mono_accepts_1d():
    x = np.array([0.1, 0.2], dtype=np.float64)
    y = to_mono(x)
    assert y.dtype == np.float32 and y.shape == (2,)
    assert to_mono(x, channel=0).shape == (2,)


@pytest.mark.parametrize("channel", [2, 5, -1])
def test_to_mono_channel_out_of_range(channel):
    with pytest.raises(AudioError) as e:
        to_mono(np.zeros((4, 2), dtype=np.float32), channel=channel)
    assert f"channel {channel}" in str(e.value) and "2 channels" in str(e.value) and "\n" not in str(e.value)


def test_to_mono_1d_channel_out_of_range():
    with pytest.raises(AudioError, match="1 channel"):
        to_mono(np.zeros(4, dtype=np.float32), channel=1)


# ------------------------------------------------------------------- imports


def test_device_audio_modules_do_not_import_scipy():
    code = "import sys, device.audio.audio_io, device.audio.resample; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'tensorflow')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert out.stdout.strip() == "[]"


def test_seek_reads_from_the_frame_without_decoding_before(tmp_path):
    x = np.random.default_rng(9).uniform(-0.5, 0.5, size=(5000, 2)).astype(np.float32)
    path = tmp_path / "long.wav"
    write_wav(path, x, 8000, sample_format="float32")
    with WavReader(path) as reader:
        reader.seek(3210)
        assert reader.tell() == 3210
        np.testing.assert_array_equal(reader.read(100), x[3210:3310])
        reader.seek(reader.n_frames)
        assert reader.read(10).shape == (0, 2)
        with pytest.raises(ValueError, match="outside"):
            reader.seek(5001)
