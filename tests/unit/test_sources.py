"""open_source: the one place an audio source is built from the config, so every command reads the same channel."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from device.audio.audio_io import write_wav
from device.audio.sources import FILE_BLOCK_SAMPLES, MicrophoneStream, RawPcmStream, WavFileStream, open_source
from device.settings.config import config_from_dict

RATE = 16000


def _audio(**audio):
    return config_from_dict({"device": {"id": "t", "site": "s"}, "mqtt": {"enabled": False}, "audio": audio}).audio


def _stereo(path):
    t = np.arange(RATE, dtype=np.float32) / RATE
    left = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    right = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    write_wav(path, np.stack([left, right], axis=1), RATE, "float32")
    return left, right


def _read(stream):
    return np.concatenate(list(stream.blocks()))


def test_a_wav_file_is_read_on_the_configured_channel(tmp_path):
    left, right = _stereo(tmp_path / "stereo.wav")
    np.testing.assert_array_equal(
        _read(open_source(_audio(channel=1, channels=2), RATE, tmp_path / "stereo.wav")), right
    )
    np.testing.assert_array_equal(
        _read(open_source(_audio(channel=0, channels=2), RATE, tmp_path / "stereo.wav")), left
    )
    mixed = _read(open_source(_audio(), RATE, tmp_path / "stereo.wav"))
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-7)


def test_options_override_the_config_and_blocks_follow_it(tmp_path):
    left, _ = _stereo(tmp_path / "stereo.wav")
    stream = open_source(_audio(channel=1, channels=2, block_samples=1000), RATE, tmp_path / "stereo.wav")
    assert isinstance(stream, WavFileStream) and not stream.realtime
    assert stream.block_samples == FILE_BLOCK_SAMPLES  # a file read as fast as possible: large blocks
    paced = open_source(_audio(block_samples=1000), RATE, tmp_path / "stereo.wav", realtime=True)
    assert paced.block_samples == 1000  # paced as a microphone: the configured blocks
    stream = open_source(_audio(channel=1, channels=2), RATE, tmp_path / "stereo.wav", channel=0, block_samples=256)
    blocks = list(stream.blocks())
    assert len(blocks[0]) == 256
    np.testing.assert_array_equal(np.concatenate(blocks), left)


def test_stdin_and_microphone_sources_take_the_config(monkeypatch):
    pcm = (np.arange(2000, dtype=np.int16).reshape(-1, 2)).tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    stream = open_source(_audio(source="stdin", channels=2, channel=1, stdin_format="s16le"), RATE)
    assert isinstance(stream, RawPcmStream)
    np.testing.assert_allclose(_read(stream), np.arange(1, 2000, 2) / 32768.0, rtol=1e-6)
    mic = open_source(_audio(channels=2, channel=1, block_samples=512), RATE, stop_event=None)
    assert isinstance(mic, MicrophoneStream) and mic.channel == 1 and mic.block_samples == 512


def test_a_wav_source_without_a_file_is_refused():
    with pytest.raises(ValueError, match="one file at a time"):
        open_source(_audio(source="wav", wav_paths=["x.wav"]), RATE)


def test_scores_do_not_depend_on_the_block_size_a_file_is_read_in(tmp_path):
    """Larger blocks for files read as fast as possible change the work per block, never the windows."""
    from device.analysis.features import FeatureParams
    from device.pipeline import iter_windows

    params = FeatureParams()
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(5 * params.window_samples + 123)).astype(np.float32)
    write_wav(tmp_path / "mono.wav", x, RATE)
    windows = {}
    for block in (256, 1024, FILE_BLOCK_SAMPLES):
        stream = open_source(_audio(), RATE, tmp_path / "mono.wav", block_samples=block)
        windows[block] = [w.samples.copy() for w in iter_windows(stream.blocks(), params)]
    for block, got in windows.items():
        assert len(got) == len(windows[256]) and all(np.array_equal(a, b) for a, b in zip(got, windows[256])), block
