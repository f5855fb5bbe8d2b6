"""The speech guard: real speech (Debian alsa-utils' voice) is found, alone and under a machine; machines, noise,
silence, clipping, short clips and 8 kHz audio give sane answers; a withheld clip leaves one line, no audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.analysis.speech import analyse_clip
from device.audio.audio_io import read_wav, to_mono
from device.audio.resample import resample
from device.audio.ring_buffer import RingBuffer
from device.daemon.labels import store_label
from device.errors import AcmonError
from device.evidence.clips import WITHHELD_SPEECH, EvidenceRecorder, evidence_files, withheld_reason
from tests.helpers import require

ALSA = Path("/usr/share/sounds/alsa")  # alsa-utils (scripts/setup.sh installs it): one man's voice, and Noise.wav
WORDS = ("Front_Center", "Front_Left", "Rear_Right", "Side_Left")
RATE = 16000


def _load(name: str, rate: int = RATE) -> np.ndarray:
    path = ALSA / f"{name}.wav"
    require(path.is_file(), f"{path} not found: apt-get install alsa-utils (scripts/setup.sh does)")
    samples, file_rate = read_wav(path)
    return resample(to_mono(samples).astype(np.float64), file_rate, rate)


def _machine(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A pump-like sound: a 50 Hz motor's harmonics, a 1.2 kHz whine amplitude-modulated at the 4 Hz shaft rate
    (inside speech's syllable range), broadband flow noise and a click every 0.4 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(0.3 / k * np.sin(2 * np.pi * 50 * k * t + k) for k in range(1, 20))
    x = x + 0.2 * (1 + 0.8 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 1200 * t)
    x = x + 0.1 * rng.normal(size=len(t))
    x[:: int(0.4 * rate)] += 2.0
    return 0.1 * x / np.sqrt(np.mean(x**2))


def _mix(machine: np.ndarray, speech: np.ndarray, snr_db: float, at: int) -> np.ndarray:
    active = speech[np.abs(speech) > 0.03 * np.abs(speech).max()]
    gain = np.sqrt(np.mean(machine**2) * 10 ** (snr_db / 10) / np.mean(active**2))
    out = machine.copy()
    out[at : at + len(speech)] += gain * speech
    return out


@pytest.mark.parametrize("word", WORDS)
def test_a_spoken_word_alone_is_speech(word):
    verdict = analyse_clip(_load(word), RATE)
    assert verdict.speech and verdict.probability > 0.5, verdict


@pytest.mark.parametrize("snr_db", [0, -6])
def test_speech_under_a_machine_is_found_where_it_is(snr_db):
    speech = np.concatenate([_load(w) for w in WORDS[:2]])
    verdict = analyse_clip(_mix(_machine(10), speech, snr_db, 4 * RATE), RATE)
    assert verdict.speech, verdict
    assert 3.0 <= verdict.at_seconds <= 4 * RATE / RATE + len(speech) / RATE


def test_machines_noise_and_silence_are_not_speech():
    for seed in range(3):
        assert not analyse_clip(_machine(10, seed=seed), RATE).speech
    assert not analyse_clip(_load("Noise"), RATE).speech  # alsa-utils' noise burst
    assert not analyse_clip(np.random.default_rng(1).normal(0, 0.1, 10 * RATE), RATE).speech
    silent = analyse_clip(np.zeros(10 * RATE), RATE)
    assert not silent.speech and silent.probability < 0.5


def test_hostile_clips_give_sane_answers():
    for x in (np.zeros(0), np.zeros(10), np.full(RATE, np.nan), np.full(3 * RATE, 1.0)):
        verdict = analyse_clip(x, RATE)
        assert not verdict.speech and 0.0 <= verdict.probability <= 1.0
    clipped = np.clip(_load("Front_Left") * 50, -1, 1)  # a voice driven into full-scale clipping is still a voice
    assert analyse_clip(clipped, RATE).speech
    short = _load("Front_Center")[: int(0.3 * RATE)]  # shorter than a segment: judged on what there is
    assert 0.0 <= analyse_clip(short, RATE).probability <= 1.0
    with pytest.raises(ValueError, match="below 8000 Hz"):
        analyse_clip(np.zeros(RATE), 4000)


def test_8_khz_and_48_khz_audio():
    assert analyse_clip(_load("Side_Left", 8000), 8000).speech
    assert not analyse_clip(_machine(5, rate=8000), 8000).speech
    assert analyse_clip(_load("Side_Left", 48000), 48000).speech


def _recorder(tmp_path: Path, guard: bool) -> tuple[EvidenceRecorder, RingBuffer]:
    params = FeatureParams()
    recorder = EvidenceRecorder(tmp_path / "evidence", params, 1.0, 1.0, 10.0, speech_guard=guard)
    capacity = int(recorder.history_seconds * params.sample_rate_hz) + RATE
    return recorder, RingBuffer(params.window_samples, params.hop_samples, capacity)


def test_a_clip_with_speech_is_withheld_with_one_line(tmp_path):
    event_id = "ab" * 16
    recorder, ring = _recorder(tmp_path, guard=True)
    speech = np.concatenate([_load(w) for w in WORDS])
    ring.push(_mix(_machine(6), speech, -6, 0).astype(np.float32))
    name = recorder.start(event_id, 2.5, wall_time=0)
    assert recorder.poll(ring) == []
    assert evidence_files(recorder.directory, event_id) == [] and recorder.withheld == 1
    why = withheld_reason(recorder.directory, event_id)
    assert why is not None and why.startswith(WITHHELD_SPEECH)
    assert recorder.withheld_stems[name.rsplit(".", 1)[0]] == why
    with pytest.raises(AcmonError, match="label: event .*: evidence withheld: speech detected"):
        store_label(recorder.directory, tmp_path / "dataset", event_id, "false_alarm")
    # The guard off: the same audio is written.
    plain, ring2 = _recorder(tmp_path / "off", guard=False)
    ring2.push(_mix(_machine(6), speech, -6, 0).astype(np.float32))
    plain.start(event_id, 2.5, wall_time=0)
    assert len(plain.poll(ring2)) == 1 and withheld_reason(plain.directory, event_id) is None


def test_a_machine_clip_is_kept_with_the_guard_on(tmp_path):
    recorder, ring = _recorder(tmp_path, guard=True)
    ring.push(_machine(6).astype(np.float32))
    recorder.start("cd" * 16, 2.5, wall_time=0)
    assert len(recorder.poll(ring)) == 1 and recorder.withheld == 0
    assert {p.suffix for p in evidence_files(recorder.directory, "cd" * 16)} == {".wav", ".png"}


def test_withheld_lines_are_under_the_retention(tmp_path):
    recorder, ring = _recorder(tmp_path, guard=True)
    recorder.max_clips = 2
    speech = np.concatenate([_load(w) for w in WORDS])
    ring.push(_mix(_machine(6), speech, 0, 0).astype(np.float32))
    for i in range(4):
        recorder.start(f"{i:02d}" * 16, 2.5, wall_time=i * 60)
    recorder.flush(ring)
    assert len(list(recorder.directory.glob("*.withheld"))) == 2


def test_a_planted_withheld_file_gives_one_bounded_line(tmp_path):
    event_id = "ef" * 16
    (tmp_path / f"20260101T000000Z_{event_id[:12]}.withheld").write_bytes(b"x" * 10_000_000 + b"\nsecond line")
    assert withheld_reason(tmp_path, event_id) == "x" * 200
    (tmp_path / f"20260101T000000Z_{event_id[:12]}.withheld").write_bytes(b"")
    assert withheld_reason(tmp_path, event_id) == WITHHELD_SPEECH
    assert withheld_reason(tmp_path, "00" * 16) is None
