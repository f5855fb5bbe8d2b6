"""benchmarks/fault_injection.py (faults at stated levels, no clipping, determinism, DCASE layout) and
benchmarks/real_sets.py (the real-recording sets, on ../shared/data when it is there)."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from benchmarks.fault_injection import (
    ADDITIVE_KINDS,
    CLIP_LIMIT,
    FAULT_KINDS,
    LEVELS,
    inject,
    make_injected_dataset,
    reproduce,
)
from device.audio.audio_io import read_wav, to_mono, write_wav
from tests.helpers import REPO, require

RATE = 16000
SHARED = REPO.parent / "shared"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _db(a: float, b: float) -> float:
    return 20.0 * math.log10(a / b)


def _machine(seconds: float = 2.0, rms: float = 0.03, seed: int = 7) -> np.ndarray:
    """A stand-in recording: low-passed noise (most energy low, as machines) plus a hum, at the given RMS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    x = noise + 0.5 * np.sin(2 * np.pi * 120.0 * np.arange(n) / RATE)
    return (x * rms / _rms(x)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * RATE / len(x))


# ------------------------------------------------------------------------------------------------
# inject()
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_level_changes_the_recording_by_its_stated_amount(kind):
    x = _machine()
    for level in LEVELS[kind]:
        y, params = inject(x, RATE, kind, level, np.random.default_rng(1))
        assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
        assert np.max(np.abs(y)) <= CLIP_LIMIT
        assert params["kind"] == kind and params["level"] == level and params["scaled_by"] == 1.0
        component_db = _db(_rms(y.astype(np.float64) - x), _rms(x))
        if kind in ADDITIVE_KINDS:  # the injected component's RMS re the recording's
            assert component_db == pytest.approx(level, abs=0.05)
        elif kind == "am":  # x * m sin(...) has RMS m / sqrt(2) times the recording's
            assert component_db == pytest.approx(_db(level, math.sqrt(2)), abs=0.5)
        elif kind == "level_shift":
            assert _db(_rms(y), _rms(x)) == pytest.approx(level, abs=0.01)
        else:  # pitch_shift: a moved spectrum is a large change; the frequency test below checks the amount
            assert component_db > -10.0
        json.dumps(params, allow_nan=False)  # JSON-ready, for injections.jsonl


def test_the_dict_describes_the_fault_that_was_added():
    x = _machine()
    t = np.arange(len(x)) / RATE

    diff = inject(x, RATE, "tone", -20, np.random.default_rng(2))
    assert _peak_hz(diff[0] - x) == pytest.approx(diff[1]["frequency_hz"], abs=1.0)

    y, p = inject(x, RATE, "harmonics", -20, np.random.default_rng(3))
    power = np.abs(np.fft.rfft((y - x) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / RATE)
    near = np.zeros(len(freqs), bool)
    for k in p["orders"]:
        line = np.abs(freqs - k * p["fundamental_hz"]) <= 3.0
        assert power[line].max() > 1e3 * np.median(power)  # every listed harmonic is there
        near |= line
    assert power[near].sum() > 0.999 * power.sum()  # and nothing else
    assert p["n_harmonics"] == len(p["orders"]) >= 1

    y, p = inject(x, RATE, "am", 0.3, np.random.default_rng(4))
    expected = 1.0 + 0.3 * np.sin(2 * np.pi * p["modulation_hz"] * t + p["phase_rad"])
    loud = np.abs(x) > 1e-3
    assert y[loud] / x[loud] == pytest.approx(expected[loud], rel=1e-4)

    y, p = inject(x, RATE, "noise_burst", -20, np.random.default_rng(5))
    d = y.astype(np.float64) - x
    inside = np.zeros(len(x), bool)
    for start, duration in zip(p["starts_s"], p["durations_s"]):
        inside[int(start * RATE) : int((start + duration) * RATE) + 1] = True
    assert _rms(d[~inside]) < 1e-6 < _rms(d[inside])
    freqs = np.fft.rfftfreq(len(d), 1.0 / RATE)
    power = np.abs(np.fft.rfft(d)) ** 2
    in_band = (freqs >= p["band_lo_hz"] - 20) & (freqs <= p["band_hi_hz"] + 20)
    assert power[in_band].sum() > 0.99 * power.sum()

    y, p = inject(x, RATE, "clicks", -20, np.random.default_rng(6))
    energy = np.sort((y.astype(np.float64) - x) ** 2)[::-1]
    assert np.searchsorted(np.cumsum(energy), 0.9 * energy.sum()) < 0.1 * len(x)  # sparse
    assert p["n_clicks"] == len(p["times_s"]) >= 1

    y, p = inject(x, RATE, "impulse_train", -20, np.random.default_rng(8))
    assert p["n_impacts"] == pytest.approx(p["impact_rate_hz"] * len(x) / RATE, abs=2)
    envelope = np.abs(y.astype(np.float64) - x)
    envelope_spectrum = np.abs(np.fft.rfft(envelope - envelope.mean()))
    k = int(round(p["impact_rate_hz"] * len(x) / RATE))
    assert envelope_spectrum[k - 2 : k + 3].max() > 10 * np.median(envelope_spectrum)


@pytest.mark.parametrize("percent", LEVELS["pitch_shift"])
def test_pitch_shift_moves_every_frequency_by_the_stated_percent_and_keeps_the_top_band(percent):
    n = 2 * RATE
    t = np.arange(n) / RATE
    rng = np.random.default_rng(0)
    x = (0.2 * np.sin(2 * np.pi * 1000.0 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)
    y, p = inject(x, RATE, "pitch_shift", percent, np.random.default_rng(0))
    assert len(y) == n
    assert _peak_hz(y) == pytest.approx(1000.0 * (1 + percent / 100), abs=1.0)
    assert _rms(y) == pytest.approx(_rms(x), rel=0.02)  # the tone keeps its level through the clip
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    top = freqs > p["fill_above_hz"] + 150  # above the crossover ramp: the original recording
    assert np.abs(np.fft.rfft(y - x))[top].max() < 1e-3 * np.abs(np.fft.rfft(x))[top].max() + 1e-2


def test_a_fault_that_would_clip_scales_the_whole_clip_down_and_says_so():
    x = _machine(rms=0.3)
    x = np.clip(x, -1, 1)
    for kind, level in (("clicks", -10.0), ("level_shift", 6.0)):
        y, params = inject(x, RATE, kind, level, np.random.default_rng(0))
        assert np.max(np.abs(y)) <= CLIP_LIMIT
        assert params["clipping_avoided"] is True and 0 < params["scaled_by"] < 1
        if kind == "level_shift":  # the shape is kept: y = scaled_by * gain * x
            assert y == pytest.approx(params["scaled_by"] * 10 ** (level / 20) * x, abs=1e-6)


def test_deterministic_given_the_generator_and_reproducible_from_the_dict():
    x = _machine(seconds=1.0)
    for kind in FAULT_KINDS:
        level = LEVELS[kind][1]
        y1, p1 = inject(x, RATE, kind, level, np.random.default_rng(42))
        y2, p2 = inject(x, RATE, kind, level, np.random.default_rng(42))
        assert np.array_equal(y1, y2) and p1 == p2
        assert np.array_equal(reproduce(x, RATE, p1), y1)
        if kind not in ("level_shift", "pitch_shift"):  # the only kinds with nothing random
            y3, _ = inject(x, RATE, kind, level, np.random.default_rng(43))
            assert not np.array_equal(y1, y3)


def test_bad_requests_give_clear_errors():
    x = _machine(seconds=0.5)
    with pytest.raises(ValueError, match="unknown fault kind 'rattle'.*tone.*pitch_shift"):
        inject(x, RATE, "rattle", -20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="modulation depth"):
        inject(x, RATE, "am", 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mono"):
        inject(np.stack([x, x], axis=1), RATE, "tone", -20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="silent"):
        inject(np.zeros_like(x), RATE, "tone", -20, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        inject(x * 100, RATE, "tone", -20, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------
# make_injected_dataset()
# ------------------------------------------------------------------------------------------------
def _recordings(folder, count=6, seconds=1.0):
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"rec_{i:02d}.wav"
        write_wav(path, _machine(seconds=seconds, seed=i), RATE, "int16")
        paths.append(path)
    return paths


def _manifest(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_make_injected_dataset_writes_the_dcase_layout_and_a_manifest(tmp_path):
    paths = _recordings(tmp_path / "src")
    kinds = ("tone", "am", "level_shift")
    levels = {"tone": (-30.0, -10.0), "am": (0.2,), "level_shift": (-3.0, 3.0)}
    machine = make_injected_dataset(paths, tmp_path / "out", "pump", 3, kinds, levels, seed=5, clips_per_pair=2)
    out = tmp_path / "out"
    assert machine == out / "pump"
    train = sorted(p.name for p in (machine / "train").iterdir())
    test = sorted(p.name for p in (machine / "test").iterdir())
    assert train == [f"normal_id_00_{i:08d}.wav" for i in range(3)]
    assert [n for n in test if n.startswith("normal")] == [f"normal_id_00_{i:08d}.wav" for i in range(3)]
    assert len([n for n in test if n.startswith("anomaly")]) == 5 * 2  # 5 (kind, level) pairs x 2 clips

    # train = the first n_train in the order given; held-out normals untouched
    assert (machine / "train" / "normal_id_00_00000002.wav").read_bytes() == paths[2].read_bytes()
    assert (machine / "test" / "normal_id_00_00000000.wav").read_bytes() == paths[3].read_bytes()

    rows = _manifest(out)
    assert list(rows[0]) == ["path", "machine_type", "machine_id", "split", "label", "fault", "level", "source"]
    assert len(rows) == 3 + 3 + 10 and all((out / r["path"]).is_file() for r in rows)
    anomalies = [r for r in rows if r["label"] == "anomaly"]
    assert {(r["fault"], r["level"]) for r in anomalies} == {
        ("tone", "-30"),
        ("tone", "-10"),
        ("am", "0.2"),
        ("level_shift", "-3"),
        ("level_shift", "3"),
    }
    assert all(r["split"] == "test" and r["source"] in {str(p) for p in paths[3:]} for r in anomalies)

    # each anomaly is its held-out normal with the recorded fault, and the same clips carry every level of a kind
    injections = [json.loads(line) for line in open(out / "injections.jsonl")]
    assert len(injections) == 10
    for j in injections:
        base = to_mono(read_wav(out / j["held_out_normal"])[0])
        faulty = to_mono(read_wav(out / j["path"])[0])
        assert np.array_equal(reproduce(base, RATE, j), faulty)
    tone = sorted((j["held_out_normal"], j["seed"]) for j in injections if j["kind"] == "tone")
    assert tone[0::2] == tone[1::2]


def test_make_injected_dataset_is_deterministic_and_merges_machine_types(tmp_path):
    paths = _recordings(tmp_path / "src", count=4)
    args = dict(kinds=("clicks", "pitch_shift"), levels={"clicks": (-20.0,), "pitch_shift": (2.0,)}, seed=3)
    a = make_injected_dataset(paths, tmp_path / "a", "fan", 2, **args)
    b = make_injected_dataset(paths, tmp_path / "b", "fan", 2, **args)
    names = sorted(p.name for p in (a / "test").iterdir())
    assert names == sorted(p.name for p in (b / "test").iterdir())
    assert all((a / "test" / n).read_bytes() == (b / "test" / n).read_bytes() for n in names)
    c = make_injected_dataset(paths, tmp_path / "c", "fan", 2, **{**args, "seed": 4})
    first = "test/anomaly_id_00_00000000.wav"
    assert (a / first).read_bytes() != (c / first).read_bytes()

    # a second machine type joins the manifest; rebuilding the first replaces only its rows
    make_injected_dataset(paths, tmp_path / "a", "valve", 2, **args)
    make_injected_dataset(paths, tmp_path / "a", "fan", 3, **args)
    rows = _manifest(tmp_path / "a")
    assert sum(r["machine_type"] == "valve" for r in rows) == 2 + 2 + 4
    assert sum(r["machine_type"] == "fan" for r in rows) == 3 + 1 + 2
    assert all((tmp_path / "a" / r["path"]).is_file() for r in rows)

    (tmp_path / "d" / "fan").mkdir(parents=True)
    (tmp_path / "d" / "fan" / "mine.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        make_injected_dataset(paths, tmp_path / "d", "fan", 2, **args)
    with pytest.raises(ValueError, match="n_train"):
        make_injected_dataset(paths, tmp_path / "e", "fan", 4, **args)
    with pytest.raises(ValueError, match="unknown fault kind"):
        make_injected_dataset(paths, tmp_path / "e", "fan", 2, kinds=("rattle",))


# ------------------------------------------------------------------------------------------------
# real_sets on the shared recordings
# ------------------------------------------------------------------------------------------------
def test_real_sets_refuse_a_work_folder_inside_the_repository(tmp_path):
    from benchmarks.real_sets import build_real_sets

    with pytest.raises(ValueError, match="inside the repository"):
        build_real_sets(tmp_path, REPO / "real_sets_work")
    assert not (REPO / "real_sets_work").exists()


def test_build_real_sets_on_the_shared_recordings(tmp_path):
    real = SHARED / "data" / "real"
    require(
        real.is_dir() and (SHARED / "data" / "dcase2023_samples").is_dir(),
        f"{real} not found (the CI checkout has shared/ beside the project)",
    )
    from benchmarks.real_sets import build_real_sets

    work = tmp_path / "work"
    # every set, the injected ones with one fault kind at one level to stay fast
    groups, manifest = build_real_sets(SHARED, work, seed=0, kinds=("tone",), levels={"tone": (-20.0,)})
    sizes = {(g.set_name, g.machine_type): (g.n_train, g.n_test_normal, g.n_test_anomaly) for g in groups}
    dev_types = ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve")
    expected = {
        ("real-fan", "fan"): (75, 11, 12),
        **{("real-dcase2020-dev", t): (3, 3, 3) for t in dev_types},
        **{("real-dcase2023", t): (2, 1, 1) for t in ("ToyTrain", "bearing", "fan", "gearbox", "valve")},
        ("injected-fan", "fan"): (50, 25, 10),
        **{("injected-dcase2020", t): (3, 3, 3) for t in dev_types},
    }
    assert sizes == expected
    assert all(g.note for g in groups)
    assert "machine id" in groups[0].note.lower() and "1/9" in groups[1].note

    for g in groups:  # the folders hold what the groups say, in DCASE names
        assert g.data_dir == work / g.set_name / g.machine_type
        names = [p.name for p in (g.data_dir / "train").iterdir()]
        test = [p.name for p in (g.data_dir / "test").iterdir()]
        assert len(names) == g.n_train and all(n.startswith("normal_id_00_") for n in names)
        assert sum(n.startswith("normal_id_00_") for n in test) == g.n_test_normal
        assert sum(n.startswith("anomaly_id_00_") for n in test) == g.n_test_anomaly

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "set", "machine_type", "split", "label", "fault", "level", "source"]
    assert len(rows) == sum(sum(v) for v in expected.values())
    assert all((work / r["path"]).is_file() for r in rows)
    halves = [r for r in rows if r["set"] == "real-dcase2020-dev"]
    assert all(r["source"].endswith(("#t=0,5", "#t=5,10", "#t=6,11")) for r in halves)
    x, rate = read_wav(work / halves[0]["path"])
    assert rate == RATE and len(x) == 5 * RATE
    linked = work / "real-fan" / "fan" / "train" / "normal_id_00_00000000.wav"
    assert os.path.realpath(linked).startswith(os.path.realpath(real))  # symlinked, not copied into work

    # rebuilding one set replaces it and keeps the others in the manifest
    groups2, manifest2 = build_real_sets(SHARED, work, sets=("real-dcase2023",))
    assert [g.set_name for g in groups2] == ["real-dcase2023"] * 5
    with open(manifest2, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
