"""Unit tests of the synthetic machine-sound generator (training/synth.py)."""

from __future__ import annotations

import argparse
import csv
import re
import wave

import numpy as np
import pytest

from device.errors import AcmonError
from training import synth

SR = 16000
DCASE_NAME = re.compile(r"^(normal|anomaly)_id_\d\d_\d{8}\.wav$")
ALL_FAULTS = [(kind, fault) for kind in synth.MACHINE_TYPES for fault in synth.FAULTS_BY_TYPE[kind]]


def _power_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    return np.fft.rfftfreq(x.size, 1.0 / SR), spectrum


def _band_energy(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    freqs, spectrum = _power_spectrum(x)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum())


def _stft_power(x: np.ndarray, frame: int = 1024) -> np.ndarray:
    n_frames = (x.size - frame) // (frame // 2) + 1
    idx = np.arange(frame)[None, :] + (frame // 2) * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(x[idx] * np.hanning(frame), axis=1)) ** 2 + 1e-20


def _third_octave_levels_db(x: np.ndarray) -> np.ndarray:
    """Band levels in dB re the loudest band, 1/3-octave bands from 50 Hz to 6.3 kHz."""
    freqs, spectrum = _power_spectrum(x)
    edges_hz = 50.0 * 2.0 ** (np.arange(22) / 3.0)
    bands = zip(edges_hz[:-1], edges_hz[1:])
    levels = np.array([10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].sum() + 1e-20) for lo, hi in bands])
    return levels - levels.max()


# --------------------------------------------------------------------------------------------------
# Determinism and per-machine character
# --------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_clip():
    a = synth.render_clip("pump", 0, seconds=1.0, fault="bearing", fault_strength=0.7, snr_db=3.0, seed=11)
    b = synth.render_clip("pump", 0, seconds=1.0, fault="bearing", fault_strength=0.7, snr_db=3.0, seed=11)
    c = synth.render_clip("pump", 0, seconds=1.0, fault="bearing", fault_strength=0.7, snr_db=3.0, seed=12)
    assert a.dtype == np.float32 and a.shape == (SR,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("machine_type", synth.MACHINE_TYPES)
def test_different_ids_have_different_spectra(machine_type):
    # Same seed: the same operating-point draw and background, so any difference is the machine's own
    # character (tones, resonances, noise slope), measured as 1/3-octave band levels.
    clips = [synth.render_clip(machine_type, machine_id, seconds=3.0, snr_db=20.0, seed=1) for machine_id in (0, 1)]
    levels = [_third_octave_levels_db(clip) for clip in clips]
    assert np.mean(np.abs(levels[0] - levels[1])) > 1.0


def test_profile_is_deterministic_and_transformer_mains():
    assert synth.machine_profile("fan", 4) == synth.machine_profile("fan", 4)
    assert synth.machine_profile("fan", 4) != synth.machine_profile("fan", 5)
    assert synth.machine_profile("transformer", 0).mains_hz == 50.0
    assert synth.machine_profile("transformer", 3).mains_hz == 60.0


# --------------------------------------------------------------------------------------------------
# Levels
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("machine_type", synth.MACHINE_TYPES)
def test_normal_clip_level_range_no_clipping(machine_type):
    low_db, high_db = synth.CLIP_RMS_DBFS_RANGE
    for seed in range(6):
        x = synth.render_clip(machine_type, seed % 3, seconds=1.0, snr_db=-3.0 + 3 * seed, seed=seed)
        assert np.all(np.isfinite(x))
        assert np.max(np.abs(x)) < 1.0
        rms_db = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        assert low_db - 0.01 <= rms_db <= high_db + 0.01


@pytest.mark.parametrize(("machine_type", "fault"), ALL_FAULTS)
def test_fault_clip_finite_and_below_full_scale(machine_type, fault):
    for seed in range(3):
        x = synth.render_clip(machine_type, 1, seconds=1.0, fault=fault, fault_strength=1.0, snr_db=9.0, seed=seed)
        assert np.all(np.isfinite(x))
        assert np.max(np.abs(x)) <= synth.PEAK_LIMIT + 1e-6


# --------------------------------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("machine_id", "hum_hz"), [(0, 100.0), (3, 120.0)])
def test_transformer_hum_at_twice_mains(machine_id, hum_hz):
    x = synth.render_clip("transformer", machine_id, seconds=4.0, snr_db=6.0, seed=5)
    freqs, spectrum = _power_spectrum(x)
    low = (freqs >= 20.0) & (freqs <= 1000.0)
    strongest_hz = freqs[low][np.argmax(spectrum[low])]
    assert abs(strongest_hz - hum_hz) < 1.0


def test_bearing_fault_raises_2_to_5_khz_band():
    kwargs = dict(seconds=3.0, snr_db=6.0, seed=7)
    normal = synth.render_clip("pump", 0, **kwargs)
    faulty = synth.render_clip("pump", 0, fault="bearing", fault_strength=1.0, **kwargs)
    # Relative to the band below 1 kHz (untouched by the fault), so a peak-limiting gain cannot matter.
    ratio_normal = _band_energy(normal, 2000, 5000) / _band_energy(normal, 20, 1000)
    ratio_faulty = _band_energy(faulty, 2000, 5000) / _band_energy(faulty, 20, 1000)
    assert 10 * np.log10(ratio_faulty / ratio_normal) > 4.0


def test_corona_crackle_repeats_at_twice_mains():
    x = synth.render_clip("transformer", 0, seconds=4.0, fault="corona", fault_strength=1.0, snr_db=6.0, seed=3)
    freqs, _ = _power_spectrum(x)
    spectrum = np.fft.rfft(x.astype(np.float64))
    spectrum[freqs < 2500.0] = 0.0  # high-pass: keep the crackle, drop the hum and its harmonics
    envelope = np.fft.irfft(spectrum, x.size) ** 2
    env_freqs, env_spectrum = _power_spectrum(envelope - envelope.mean())
    band = (env_freqs >= 30.0) & (env_freqs <= 400.0)
    assert abs(env_freqs[band][np.argmax(env_spectrum[band])] - 100.0) < 1.0


def test_bearing_band_energy_grows_with_strength():
    kwargs = dict(seconds=2.0, snr_db=6.0, seed=21)
    ratios = []
    for strength in (None, 0.1, 0.3, 0.6, 1.0):
        x = synth.render_clip("fan", 2, fault="bearing" if strength else None, fault_strength=strength or 1.0, **kwargs)
        ratios.append(_band_energy(x, 2000, 5000) / _band_energy(x, 20, 1000))
    assert all(b > a for a, b in zip(ratios, ratios[1:]))


@pytest.mark.parametrize(("machine_type", "fault"), ALL_FAULTS)
def test_fault_energy_monotonic_and_visible(machine_type, fault):
    # Same seed: machine and background are identical, only the fault component differs.
    kwargs = dict(seconds=2.0, snr_db=6.0, seed=4)
    normal = synth.render_clip(machine_type, 0, **kwargs).astype(np.float64)
    reference = _stft_power(normal)
    energies, visibility_db = [], []
    for strength in (0.1, 0.5, 1.0):
        x = synth.render_clip(machine_type, 0, fault=fault, fault_strength=strength, **kwargs).astype(np.float64)
        energies.append(np.sum((x - normal) ** 2))
        # 99.9th percentile over spectrogram cells of the level change the fault causes, in dB (high enough
        # to catch a single rubbing click in 2 s, still above single-cell outliers).
        visibility_db.append(np.percentile(10 * np.log10(_stft_power(x) / reference), 99.9))
    assert energies[0] < energies[1] < energies[2]
    assert visibility_db[0] < visibility_db[1] < visibility_db[2]
    assert visibility_db[2] > 9.0  # strength 1.0: clearly visible
    assert visibility_db[0] < visibility_db[2] - 6.0  # strength 0.1: much fainter


# --------------------------------------------------------------------------------------------------
# Dataset layout and manifest
# --------------------------------------------------------------------------------------------------
def test_make_dataset_layout_and_manifest(tmp_path):
    out = synth.make_dataset(
        tmp_path / "ds",
        machine_types=("pump", "transformer"),
        machine_ids=(0, 3),
        n_train=2,
        n_test_normal=1,
        n_test_anomaly=2,
        seconds=0.5,
        seed=9,
        progress=False,
    )
    assert out == tmp_path / "ds"
    with open(out / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == synth.MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == 2 * 2 * (2 + 1 + 2)
    wavs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert wavs == sorted(row["path"] for row in rows)
    for machine_type in ("pump", "transformer"):
        train = sorted(p.name for p in (out / machine_type / "train").iterdir())
        test = sorted(p.name for p in (out / machine_type / "test").iterdir())
        assert all(DCASE_NAME.match(name) for name in train + test)
        assert len(train) == 4 and all(name.startswith("normal_") for name in train)
        assert sum(name.startswith("anomaly_") for name in test) == 4
        assert "normal_id_03_00000001.wav" in train
    for row in rows:
        assert (row["split"] == "train") <= (row["label"] == "normal")
        if row["label"] == "anomaly":
            assert row["fault"] in synth.FAULTS_BY_TYPE[row["machine_type"]]
            assert 0.5 <= float(row["fault_strength"]) <= 1.0
        else:
            assert row["fault"] == "" and float(row["fault_strength"]) == 0.0
        assert 3.0 <= float(row["snr_db"]) <= 9.0
    pump_faults = [row["fault"] for row in rows if row["machine_type"] == "pump" and row["label"] == "anomaly"]
    assert pump_faults == ["bearing", "rubbing"] * 2  # cycles through the type's faults, per id

    # One clip regenerated alone from its manifest row matches the file (16-bit mono 16 kHz).
    row = next(r for r in rows if r["label"] == "anomaly" and r["machine_type"] == "transformer")
    with wave.open(str(out / row["path"]), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        stored = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    again = synth.render_clip(
        row["machine_type"],
        int(row["machine_id"]),
        seconds=0.5,
        fault=row["fault"],
        fault_strength=float(row["fault_strength"]),
        snr_db=float(row["snr_db"]),
        seed=int(row["seed"]),
    )
    assert np.max(np.abs(stored.astype(np.float64) / 32768.0 - again)) < 2.0 / 32768.0


def test_make_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(AcmonError, match="drill"):
        synth.make_dataset(tmp_path, machine_types=("drill",), progress=False)
    with pytest.raises(AcmonError, match="snr_db_range"):
        synth.make_dataset(tmp_path, snr_db_range=(9.0, 3.0), progress=False)
    with pytest.raises(AcmonError, match="fault_strength_range"):
        synth.make_dataset(tmp_path, fault_strength_range=(0.0, 1.0), progress=False)
    with pytest.raises(AcmonError, match="machine_ids"):
        synth.make_dataset(tmp_path, machine_ids=(100,), progress=False)
    with pytest.raises(AcmonError, match="corona"):
        synth.render_clip("pump", 0, seconds=0.1, fault="corona")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training")
    synth.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_dataset_and_summary(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path / "cli"), "--machine-types", "pump,fan", "--ids", "2", "--train", "1"]
    argv += ["--test-normal", "1", "--test-anomaly", "1", "--seconds", "0.25", "--snr-db=-3,9", "--seed", "2"]
    argv += ["--no-progress"]
    args = _parser().parse_args(argv)
    assert args.func is synth.run_synth
    assert args.func(args) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "12 clips" in summary[0] and str(tmp_path / "cli") in summary[0]
    assert len(list((tmp_path / "cli").rglob("*.wav"))) == 12
    assert (tmp_path / "cli" / "fan" / "test" / "anomaly_id_01_00000000.wav").is_file()


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--machine-types", "pump,drill", "drill"),
        ("--snr-db", "9,3", "--snr-db"),
        ("--fault-strength", "0.2", "--fault-strength"),
    ],
)
def test_cli_bad_arguments_raise_acmon_error(tmp_path, option, value, named):
    args = _parser().parse_args(["synth", "--out", str(tmp_path), f"{option}={value}", "--no-progress"])
    with pytest.raises(AcmonError) as info:
        args.func(args)
    message = str(info.value)
    assert named in message and option in message and "\n" not in message
    if option == "--machine-types":
        assert all(name in message for name in synth.MACHINE_TYPES)
    assert not list(tmp_path.rglob("*.wav"))


def test_demo_dataset(tmp_path):
    out = synth.make_demo_dataset(tmp_path / "demo", seed=0)
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(r["split"] == "train" for r in rows) == synth.DEMO_N_TRAIN
    anomalies = [r for r in rows if r["label"] == "anomaly"]
    assert len(anomalies) == synth.DEMO_N_TEST_ANOMALY
    assert all(float(r["fault_strength"]) >= 0.8 for r in anomalies)
    assert {r["machine_type"] for r in rows} == {"pump"}
