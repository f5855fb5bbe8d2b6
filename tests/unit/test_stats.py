"""Tests of the `stats` and `spectrograms` training commands (training/stats.py, training/spectrograms.py)."""

from __future__ import annotations

import argparse
import csv
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from device.audio.audio_io import write_wav
from device.errors import AcmonError
from training import spectrograms, stats
from training.synth import render_clip

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training")
    commands = parser.add_subparsers()
    stats.register(commands)
    spectrograms.register(commands)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG file"
    return struct.unpack(">II", head[16:24])


def _sine(seconds: float, rate: int, amplitude: float, hz: float = 441.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * hz * t)


@pytest.fixture
def field_folder(tmp_path) -> Path:
    root = tmp_path / "field"
    (root / "site_a").mkdir(parents=True)
    write_wav(root / "int16_sine.wav", _sine(1.0, 16000, 0.5), 16000, "int16")
    write_wav(
        root / "site_a" / "stereo24.wav", np.stack([_sine(0.5, 44100, 0.1), _sine(0.5, 44100, 0.2)], 1), 44100, "int24"
    )
    write_wav(root / "site_a" / "float_dc.wav", _sine(0.5, 48000, 0.1) + 0.1, 48000, "float32")
    write_wav(root / "quad.wav", np.tile(_sine(0.25, 8000, 0.25)[:, None], (1, 4)), 8000, "int16")
    write_wav(root / "clipped.wav", _sine(1.0, 16000, 2.0), 16000, "int16")
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(64))
    return root


def test_stats_table_csv_and_histograms(field_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert _run(["stats", str(field_folder), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table, summary = printed.split("\n\n", 1)
    lines = table.splitlines()
    assert lines[0].split() == [
        "file",
        "ch",
        "format",
        "rate_hz",
        "duration_s",
        "rms_dbfs",
        "peak_dbfs",
        "clip_%",
        "dc",
        "damaged",
        "error",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {
        "clipped.wav",
        "corrupt.wav",
        "int16_sine.wav",
        "quad.wav",
        "site_a/float_dc.wav",
        "site_a/stereo24.wav",
    }
    # Column-aligned: every row's rate column ends where the header's does.
    rate_end = lines[0].index("rate_hz") + len("rate_hz")
    assert rows["int16_sine.wav"][:rate_end].endswith("16000") and rows["quad.wav"][:rate_end].endswith(" 8000")
    assert rows["int16_sine.wav"].split()[1:9] == [
        "1",
        "pcm_s16",
        "16000",
        "1.00",
        "-9.0",
        "-6.0",
        "0.000",
        rows["int16_sine.wav"].split()[8],
    ]
    assert rows["site_a/stereo24.wav"].split()[1:4] == ["2", "pcm_s24", "44100"]
    assert rows["quad.wav"].split()[1:3] == ["4", "pcm_s16"]
    assert "not a WAV file" in rows["corrupt.wav"] and "RIFF type b'AVI '" in rows["corrupt.wav"]
    assert "files: 6 (5 readable, 1 unreadable)" in summary
    assert "sample rates: 16000 Hz (2), 44100 Hz (1), 48000 Hz (1), 8000 Hz (1)" in summary
    assert "clipping above 0.1 % of samples: 1 file(s), e.g. clipped.wav" in summary
    assert "DC offset above 0.01 of full scale: 1 file(s), e.g. site_a/float_dc.wav" in summary
    assert "unreadable: 1 file(s)" in summary and "  corrupt.wav: " in summary

    with open(out / "stats.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert (
            tuple(reader.fieldnames)
            == stats.CSV_COLUMNS
            == (
                "path",
                "channels",
                "sample_format",
                "bits_per_sample",
                "sample_rate_hz",
                "n_frames",
                "duration_seconds",
                "rms_dbfs",
                "peak_dbfs",
                "clipping_fraction",
                "dc_offset",
                "damaged_samples",
                "error",
            )
        )
        by_path = {row["path"]: row for row in reader}
    assert len(by_path) == 6
    sine = by_path["int16_sine.wav"]
    assert float(sine["rms_dbfs"]) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert float(sine["peak_dbfs"]) == pytest.approx(20 * math.log10(0.5), abs=0.01)
    assert int(sine["n_frames"]) == 16000 and float(sine["duration_seconds"]) == 1.0 and sine["error"] == ""
    assert float(by_path["site_a/float_dc.wav"]["dc_offset"]) == pytest.approx(0.1, abs=1e-3)
    assert by_path["site_a/stereo24.wav"]["bits_per_sample"] == "24"
    assert by_path["corrupt.wav"]["channels"] == "" and "not a WAV file" in by_path["corrupt.wav"]["error"]

    for name in ("duration_hist.png", "rms_dbfs_hist.png", "clipping_hist.png"):
        assert _png_size(out / name) == (640, 400)


def test_clipping_fraction_of_a_clipped_sine(tmp_path):
    x = _sine(1.0, 16000, 2.0)
    write_wav(tmp_path / "clipped.wav", x, 16000, "int16")
    codes = np.clip(np.round(x * 32768), -32768, 32767)
    # At or within 1 LSB of full scale: codes 32766..32767 and -32768..-32767.
    expected = np.mean((codes >= 32766) | (codes <= -32767))
    result = stats.file_stats(tmp_path / "clipped.wav", block_frames=1000)  # several blocks
    assert result.clipping_fraction == pytest.approx(expected, abs=1e-12)
    assert result.clipping_fraction == pytest.approx(2 / 3, abs=0.01)  # |2 sin| >= 1 for 2/3 of the time
    assert result.peak_dbfs == pytest.approx(0.0, abs=0.001)
    # Below full scale nothing counts; float beyond full scale does.
    write_wav(tmp_path / "quiet.wav", _sine(0.5, 16000, 0.9), 16000, "int24")
    assert stats.file_stats(tmp_path / "quiet.wav").clipping_fraction == 0.0
    write_wav(tmp_path / "hot.wav", np.full(100, 1.5), 16000, "float32")
    assert stats.file_stats(tmp_path / "hot.wav").clipping_fraction == 1.0


def test_stats_default_out_dir_and_machine_sound(tmp_path, capsys):
    write_wav(tmp_path / "pump.wav", render_clip("pump", 0, seconds=2.0, seed=1), 16000)
    write_wav(tmp_path / "silent.wav", np.zeros(1600), 16000)
    assert _run(["stats", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "digital silence: 1 file(s), e.g. silent.wav" in printed
    assert (tmp_path / "_stats" / "stats.csv").is_file()
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "_stats" / "stats.csv"))}
    assert rows["silent.wav"]["rms_dbfs"] == "-inf"
    assert -36.0 < float(rows["pump.wav"]["rms_dbfs"]) < -14.0  # synth clips are between -35 and -15 dBFS


def test_stats_errors(tmp_path):
    with pytest.raises(AcmonError, match="no such folder"):
        _run(["stats", str(tmp_path / "missing")])
    with pytest.raises(AcmonError, match="no .wav files found"):
        _run(["stats", str(tmp_path)])


def test_spectrograms_one_png_per_wav_mirrored(tmp_path, capsys):
    root = tmp_path / "recordings"
    (root / "site_a" / "deep").mkdir(parents=True)
    write_wav(root / "sine.wav", _sine(3.0, 16000, 0.5), 16000)
    write_wav(
        root / "site_a" / "stereo24.wav", np.stack([_sine(2.5, 44100, 0.1), _sine(2.5, 44100, 0.2)], 1), 44100, "int24"
    )
    write_wav(root / "site_a" / "deep" / "pump.wav", render_clip("pump", 0, seconds=2.5, seed=3), 16000)
    write_wav(root / "short.wav", _sine(0.5, 16000, 0.5), 16000)  # shorter than one 1.04 s window
    (root / "corrupt.wav").write_bytes(b"not audio at all")
    out = tmp_path / "pngs"
    assert _run(["spectrograms", str(root), str(out), "--seconds", "2", "--no-progress"]) == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["sine.png", "site_a/deep/pump.png", "site_a/stereo24.png"]
    for png in pngs:
        assert _png_size(out / png) == (1000, 400)
    printed = capsys.readouterr().out
    assert "wrote 3 PNG(s)" in printed and "skipped 2 file(s)" in printed

    assert _run(["spectrograms", str(root), str(tmp_path / "one"), "--limit", "1", "--no-progress"]) == 0
    assert [p.name for p in (tmp_path / "one").rglob("*.png")] == ["sine.png"]  # corrupt.wav, first, does not count


def test_logmel_image_tiles_the_device_windows():
    from device.analysis.features import FeatureParams, compute_logmel

    params = FeatureParams()
    x = render_clip("fan", 1, seconds=3.5, seed=2)
    image = spectrograms.logmel_image(x, params)
    n_windows = len(x) // params.window_samples
    assert image.shape == (n_windows * params.n_frames, params.n_mels)
    w = params.window_samples
    np.testing.assert_array_equal(image[params.n_frames : 2 * params.n_frames], compute_logmel(x[w : 2 * w], params))
    centres = spectrograms.mel_band_centres_hz(params)
    assert centres.shape == (params.n_mels,) and params.fmin_hz < centres[0] < centres[-1] < params.fmax_hz


def test_spectrograms_errors(tmp_path):
    write_wav(tmp_path / "short.wav", np.zeros(100), 16000)
    with pytest.raises(AcmonError, match="no spectrogram drawn; all 1 file"):
        _run(["spectrograms", str(tmp_path), str(tmp_path / "out"), "--no-progress"])
    with pytest.raises(AcmonError, match="--seconds: must be >= 0"):
        _run(["spectrograms", str(tmp_path), str(tmp_path / "out"), "--seconds=-1"])


def test_damaged_float_samples_are_counted_and_kept_out_of_the_levels(tmp_path):
    """NaN and 1e30 in a float file: counted in their own column, levels from the sound samples, no warning."""
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    x[100], x[200] = np.nan, 1e30
    write_wav(tmp_path / "bad.wav", x, 16000, sample_format="float32")
    s = stats.file_stats(tmp_path / "bad.wav", "bad.wav")
    assert s.damaged_samples == 2
    assert -21.0 < s.rms_dbfs < -19.0 and s.peak_dbfs < 0.0
    assert "damaged" in stats.format_table([s]) and "fit skips these files" in stats.summarize([s])
