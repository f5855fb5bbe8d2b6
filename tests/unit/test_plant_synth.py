"""benchmarks/plant_synth.py: layout, manifest, determinism, levels, faults, arguments, long streams (fast)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from benchmarks import plant_synth as ps
from device.audio.audio_io import describe_wav, read_wav

FS = 16000


def _q16(x: np.ndarray) -> np.ndarray:
    """What write_wav stores, read back."""
    return np.clip(np.round(x * 32768.0), -32768, 32767) / 32768.0


def _manifest(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_public_tables():
    assert ps.MACHINE_TYPES == ("conveyor", "fan", "pump", "tower", "compressor")
    assert set(ps.FAULTS_BY_TYPE) == set(ps.MACHINE_TYPES)
    for faults in ps.FAULTS_BY_TYPE.values():
        assert len(faults) >= 3
        for f in faults:
            lo, hi = ps.FAULT_LEVEL_DB[f]
            assert lo < hi


def test_layout_and_manifest(tmp_path):
    out = tmp_path / "ds"
    manifest = ps.make_dataset(
        out, ("conveyor", "tower"), (0, 3), n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=1.0, seed=5
    )
    assert manifest == out / "manifest.csv"
    cols, rows = _manifest(manifest)
    assert tuple(cols) == ps.MANIFEST_COLUMNS
    assert len(rows) == 2 * 2 * (1 + 1 + 1)
    for t in ("conveyor", "tower"):
        assert sorted(p.name for p in (out / t).iterdir()) == ["test", "train"]
        assert all(re.fullmatch(r"normal_id_0[03]_\d{8}\.wav", p.name) for p in (out / t / "train").iterdir())
        assert all(re.fullmatch(r"(normal|anomaly)_id_0[03]_\d{8}\.wav", p.name) for p in (out / t / "test").iterdir())
    assert not (out / "long").exists()
    for r in rows:
        path = out / r["path"]
        assert path.is_file() and not r["path"].startswith("/")
        info = describe_wav(path)
        assert (info["sample_rate_hz"], info["channels"], info["sample_format"], info["n_frames"]) == (
            FS,
            1,
            "pcm_s16",
            FS,
        )
        assert r["split"] in ("train", "test") and r["seconds"] == "1"
        assert f"_id_{int(r['machine_id']):02d}_" in r["path"] and r["path"].startswith(
            r["machine_type"] + "/" + r["split"]
        )
        if r["label"] == "anomaly":
            assert r["split"] == "test" and r["fault"] in ps.FAULTS_BY_TYPE[r["machine_type"]]
            lo, hi = ps.FAULT_LEVEL_DB[r["fault"]]
            assert lo <= float(r["fault_level_db"]) <= hi
        else:
            assert r["label"] == "normal" and r["fault"] == "" and r["fault_level_db"] == ""
        assert 0.0 <= float(r["snr_db"]) <= 12.0
        assert int(r["seed"]) // 10**9 == 5


def test_same_arguments_give_identical_bytes(tmp_path):
    kw = dict(
        machine_types=("compressor",), machine_ids=(1,), n_train=1, n_test_normal=1, n_test_anomaly=1, seconds=1.0
    )
    a = ps.make_dataset(tmp_path / "a", **kw)
    b = ps.make_dataset(tmp_path / "b", **kw)
    ps.make_dataset(tmp_path / "c", seed=1, **kw)
    assert a.read_bytes() == b.read_bytes()
    _, rows = _manifest(a)
    for r in rows:
        assert (tmp_path / "a" / r["path"]).read_bytes() == (tmp_path / "b" / r["path"]).read_bytes()
        assert (tmp_path / "a" / r["path"]).read_bytes() != (tmp_path / "c" / r["path"]).read_bytes()


def test_clip_reproducible_from_its_manifest_row(tmp_path):
    ps.make_dataset(tmp_path, ("fan",), (2,), n_train=1, n_test_normal=0, n_test_anomaly=1, seconds=1.0, seed=3)
    _, rows = _manifest(tmp_path / "manifest.csv")
    for r in rows:
        stored = read_wav(tmp_path / r["path"])[0][:, 0]
        again = _q16(ps.render_clip_from_row(r))
        np.testing.assert_array_equal(stored, again.astype(np.float32))


@pytest.mark.parametrize("machine_type", ps.MACHINE_TYPES)
def test_levels_are_realistic_and_never_clip(machine_type):
    for mid, snr in ((0, 0.0), (1, 12.0)):
        x = ps.render_clip(machine_type, mid, ps.clip_seed(0, machine_type, mid, "train", 0), 1.5, snr_db=snr)
        assert x.shape == (int(1.5 * FS),) and np.all(np.isfinite(x))
        rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
        assert -47.0 < rms_db < -13.0, rms_db
        assert np.max(np.abs(x)) < 0.98


def test_soft_limiter_bounds_peaks():
    x = np.linspace(-5, 5, 1001)
    y = ps._soft_limit(x)
    assert np.max(np.abs(y)) <= 0.97 and np.all(np.diff(y) >= 0)
    small = np.array([0.1, -0.5, 0.59])
    np.testing.assert_array_equal(ps._soft_limit(small), small)


@pytest.mark.parametrize("machine_type", ps.MACHINE_TYPES)
def test_fault_clip_differs_from_its_normal_counterpart(machine_type):
    seed = ps.clip_seed(0, machine_type, 1, "test_anomaly", 3)
    normal = ps.render_clip(machine_type, 1, seed, 1.0, snr_db=6.0)
    np.testing.assert_array_equal(normal, ps.render_clip(machine_type, 1, seed, 1.0, snr_db=6.0))
    for fault in ps.FAULTS_BY_TYPE[machine_type]:
        level = 4.0 if fault in ps.PARAMETRIC_FAULTS else -6.0
        anomalous = ps.render_clip(machine_type, 1, seed, 1.0, fault, level, snr_db=6.0)
        diff_db = 20 * np.log10(np.sqrt(np.mean((anomalous - normal) ** 2)) / np.sqrt(np.mean(normal**2)))
        assert diff_db > -25.0, (fault, diff_db)


_SPARSE_SEED = ps.clip_seed(0, "conveyor", 0, "test_anomaly", 1)


@pytest.fixture(scope="module")
def conveyor_normal():
    return ps.render_clip("conveyor", 0, _SPARSE_SEED, 6.0, snr_db=12.0)


@pytest.mark.parametrize("fault", ["roller_bearing_click", "belt_splice_slap", "loose_idler_knock"])
def test_conveyor_impact_faults_are_sparse_events(fault, conveyor_normal):
    fault_only = ps.render_clip("conveyor", 0, _SPARSE_SEED, 6.0, fault, -6.0, snr_db=12.0) - conveyor_normal
    frames = np.sum(fault_only[: len(fault_only) // 800 * 800].reshape(-1, 800) ** 2, axis=1)  # 50 ms frames
    share = np.sort(frames)[::-1].cumsum() / frames.sum()
    frames_for_90 = int(np.searchsorted(share, 0.9)) + 1
    assert frames_for_90 < 0.4 * len(frames), frames_for_90


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(machine_types=("conveyor", "boiler")), "unknown machine type"),
        (dict(machine_types=()), "machine_types is empty"),
        (dict(machine_ids=(0, 100)), "from 0 to 99"),
        (dict(machine_ids=(1, 1)), "duplicates"),
        (dict(n_train=0), "n_train"),
        (dict(n_test_anomaly=-1), "n_test_anomaly"),
        (dict(seconds=0.0), "seconds"),
        (dict(snr_db_range=(12.0, 0.0)), "snr_db_range"),
        (dict(long_minutes=-1), "long_minutes"),
        (dict(seed=-3), "seed"),
        (dict(sample_rate_hz=1000), "sample_rate_hz"),
    ],
)
def test_bad_arguments_raise_one_clear_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        ps.make_dataset(tmp_path / "x", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()


def test_bad_fault_and_cli_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="not a pump fault"):
        ps.render_clip("pump", 0, 1, 1.0, fault="corona", fault_level_db=-10.0)
    with pytest.raises(SystemExit) as e:
        ps.main(["--out", str(tmp_path / "y"), "--types", "fan,kettle", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown machine type 'kettle'" in err[-1]
    with pytest.raises(SystemExit):
        ps.main(["--out", str(tmp_path / "y"), "--ids", "0"])
    assert "--ids" in capsys.readouterr().err


def test_cli_writes_a_dataset(tmp_path):
    assert (
        ps.main(
            [
                "--out",
                str(tmp_path),
                "--types",
                "pump",
                "--ids",
                "1",
                "--train",
                "1",
                "--test-normal",
                "1",
                "--test-anomaly",
                "1",
                "--seconds",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    _, rows = _manifest(tmp_path / "manifest.csv")
    assert [r["label"] for r in rows] == ["normal", "normal", "anomaly"]


def test_long_streams_are_written_in_bounded_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(ps, "LONG_BLOCK_S", 1.0)
    monkeypatch.setattr(ps, "LONG_PART_S", 2.0)
    blocks = list(ps.render_stream("tower", 0, ps.clip_seed(0, "tower", 0, "long", 0), 2.5))
    assert [len(b[0]) for b in blocks] == [FS, FS, FS // 2]
    ps.make_dataset(
        tmp_path,
        ("compressor",),
        (0,),
        n_train=1,
        n_test_normal=0,
        n_test_anomaly=0,
        seconds=0.5,
        long_minutes=5.0 / 60.0,
    )
    _, rows = _manifest(tmp_path / "manifest.csv")
    long_rows = [r for r in rows if r["split"] == "long"]
    assert [r["path"] for r in long_rows] == [f"long/compressor/normal_id_00_part{k}.wav" for k in range(3)]
    assert [r["seconds"] for r in long_rows] == ["2", "2", "1"]
    assert {r["label"] for r in long_rows} == {"normal"} and {r["fault"] for r in long_rows} == {""}
    assert sorted(p.name for p in (tmp_path / "compressor").iterdir()) == ["test", "train"]
    x = np.concatenate([read_wav(tmp_path / r["path"])[0][:, 0] for r in long_rows])
    assert len(x) == 5 * FS and np.max(np.abs(x)) < 0.98
    # continuous across blocks and parts: no step at the 1 s boundaries larger than elsewhere
    d = np.abs(np.diff(x.astype(np.float64)))
    for k in (1, 2, 3, 4):
        assert d[k * FS - 1] < 6 * np.percentile(d, 99.9) + 1e-6
