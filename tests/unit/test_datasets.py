"""Tests of training/datasets.py: clip discovery in every layout, manifests with folds, Audacity labels, span loading."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from device.analysis.features import FeatureParams
from device.audio.audio_io import read_wav, to_mono, write_wav
from device.audio.resample import resample
from device.errors import AcmonError, AudioError
from training import datasets
from training.datasets import (
    ClipRecord,
    LoadReport,
    discover,
    folds,
    load_clip,
    load_record,
    load_records,
    read_audacity_labels,
    split_by_fold,
)

SR = 16000


def _wav(
    path: Path, seconds: float = 0.2, rate: int = SR, channels: int = 1, fmt: str = "int16", seed: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    x[:, 1:] *= 0.5  # channels differ, so mixing down and picking a channel give different results
    write_wav(path, x, rate, fmt)
    return path


def _by_name(records: list[ClipRecord]) -> dict[str, ClipRecord]:
    return {r.path.name: r for r in records}


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------
def _dcase_machine(root: Path) -> Path:
    _wav(root / "train" / "normal_id_00_00000000.wav")
    _wav(root / "train" / "normal_id_02_00000001.wav")
    _wav(root / "train" / "notes.wav")  # not a DCASE name: ignored with a warning
    _wav(root / "test" / "normal_id_00_00000000.wav")
    _wav(root / "test" / "anomaly_id_02_00000007.wav")
    return root


def test_dcase_machine_folder(tmp_path):
    machine = _dcase_machine(tmp_path / "pump")
    records = discover(machine)
    assert len(records) == 4
    got = {(r.split, r.path.name): (r.label, r.machine_type, r.machine_id) for r in records}
    assert got == {
        ("train", "normal_id_00_00000000.wav"): ("normal", "pump", "00"),
        ("train", "normal_id_02_00000001.wav"): ("normal", "pump", "02"),
        ("test", "normal_id_00_00000000.wav"): ("normal", "pump", "00"),
        ("test", "anomaly_id_02_00000007.wav"): ("anomaly", "pump", "02"),
    }
    assert all(r.fold is None and not r.is_span for r in records)


def test_dcase_parent_of_several_machines(tmp_path):
    _dcase_machine(tmp_path / "pump")
    _dcase_machine(tmp_path / "fan")
    # synth writes a manifest.csv beside the machine folders; the DCASE layout comes first.
    (tmp_path / "manifest.csv").write_text("path,label\npump/train/normal_id_00_00000000.wav,normal\n")
    records = discover(tmp_path)
    assert len(records) == 8
    assert {r.machine_type for r in records} == {"pump", "fan"}
    assert sorted(r.machine_id for r in records if r.machine_type == "fan") == ["00", "00", "02", "02"]
    assert [r.label for r in records if r.split == "test" and r.machine_id == "02"] == ["anomaly", "anomaly"]


def test_dcase_2023_section_names(tmp_path):
    _wav(tmp_path / "valve" / "train" / "section_00_source_train_normal_0001_pat_01.wav")
    _wav(tmp_path / "valve" / "test" / "section_01_target_test_anomaly_0044_pat_03.wav")
    records = discover(tmp_path / "valve")
    assert [(r.split, r.label, r.machine_id, r.machine_type) for r in records] == [
        ("train", "normal", "00", "valve"),
        ("test", "anomaly", "01", "valve"),
    ]


def test_folder_per_label(tmp_path):
    _wav(tmp_path / "normal" / "a.wav")
    _wav(tmp_path / "normal" / "day2" / "b.wav")
    _wav(tmp_path / "bearing_fault" / "c.wav")
    _wav(tmp_path / "Cavitation" / "d.wav")
    (tmp_path / "empty").mkdir()
    records = _by_name(discover(tmp_path))
    assert {name: r.label for name, r in records.items()} == {
        "a.wav": "normal",
        "b.wav": "normal",
        "c.wav": "bearing_fault",
        "d.wav": "Cavitation",
    }
    assert {r.machine_type for r in records.values()} == {tmp_path.name}


def test_plain_folder_is_normal_and_dcase_names_keep_their_label(tmp_path):
    _wav(tmp_path / "rec1.wav")
    _wav(tmp_path / "rec2.WAV")
    _wav(tmp_path / "fan_test_section_00_source_test_anomaly_0022_m-n_W.wav")
    records = _by_name(discover(tmp_path))
    assert records["rec1.wav"].label == records["rec2.WAV"].label == "normal"
    flat = records["fan_test_section_00_source_test_anomaly_0022_m-n_W.wav"]
    assert (flat.label, flat.split, flat.machine_type, flat.machine_id) == ("anomaly", "test", "fan", "00")


def test_discover_errors(tmp_path):
    with pytest.raises(AcmonError, match="no such file or folder"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AcmonError, match="no .wav files found"):
        discover(tmp_path / "empty")
    _wav(tmp_path / "nested" / "bearing" / "x.wav")
    with pytest.raises(AcmonError, match=r"subfolders bearing hold WAV files.*normal"):
        discover(tmp_path / "nested")


# --------------------------------------------------------------------------------------------------
# CSV manifest
# --------------------------------------------------------------------------------------------------
def _manifest_dataset(root: Path, text: str) -> Path:
    for i in range(6):
        _wav(root / "audio" / f"clip{i}.wav", seed=i)
    manifest = root / "manifest.csv"
    manifest.write_text(text)
    return manifest


MANIFEST = """path,label,fold,machine_type,machine_id
audio/clip0.wav,normal,1,pump,7
audio/clip1.wav,normal,1,pump,7
audio/clip2.wav,bearing,2,pump,7
audio/clip3.wav,Normal,2,pump,8

audio/clip4.wav,normal,3,,
audio/clip5.wav,anomaly,3,fan,1
"""


def test_manifest_folds_and_split_by_fold(tmp_path):
    _manifest_dataset(tmp_path, MANIFEST)
    records = discover(tmp_path)
    assert [r.path.name for r in records] == [f"clip{i}.wav" for i in range(6)]
    assert [r.label for r in records] == ["normal", "normal", "bearing", "normal", "normal", "anomaly"]
    assert records[0].machine_type == "pump" and records[0].machine_id == "7"
    assert records[4].machine_type == tmp_path.name and records[4].machine_id == ""  # empty cells: defaults
    assert folds(records) == [1, 2, 3]
    train, test = split_by_fold(records, 2)
    assert [r.path.name for r in test] == ["clip2.wav", "clip3.wav"]
    assert [r.path.name for r in train] == ["clip0.wav", "clip1.wav", "clip4.wav", "clip5.wav"]
    with pytest.raises(AcmonError, match=r"test fold 4 not in the manifest \(folds: 1, 2, 3\)"):
        split_by_fold(records, 4)
    # The CSV can be given directly, and its columns may use the common alternative names.
    other = tmp_path / "meta.csv"
    other.write_text("file,class,section\naudio/clip0.wav,normal,section_00\n")
    [only] = discover(other)
    assert (only.label, only.machine_id, only.fold) == ("normal", "section_00", None)
    with pytest.raises(AcmonError, match="no fold numbers"):
        split_by_fold([only], 1)


def test_manifest_missing_column_names_the_line(tmp_path):
    manifest = _manifest_dataset(tmp_path, "\npath,fold\naudio/clip0.wav,1\n")
    with pytest.raises(AcmonError) as info:
        discover(manifest)
    message = str(info.value)
    assert f"{manifest}:2: missing column 'label' or 'class'" in message
    assert "\n" not in message


def test_manifest_without_header(tmp_path):
    manifest = _manifest_dataset(tmp_path, "audio/clip0.wav,normal,1\n")
    with pytest.raises(AcmonError, match=r"manifest.csv:1: no header row"):
        discover(manifest)


@pytest.mark.parametrize("fold", ["x", "-1", "1.5", ""])
def test_manifest_bad_fold_names_the_line(tmp_path, fold):
    manifest = _manifest_dataset(
        tmp_path, f"path,label,fold\naudio/clip0.wav,normal,1\naudio/clip1.wav,normal,{fold}\n"
    )
    with pytest.raises(AcmonError, match=rf"manifest.csv:3: fold '{fold}' is not a whole number"):
        discover(manifest)


def test_manifest_other_bad_lines(tmp_path):
    manifest = _manifest_dataset(tmp_path, "path,label\naudio/clip0.wav,normal\naudio/clip1.wav,\n")
    with pytest.raises(AcmonError, match=r"manifest.csv:3: empty 'label'"):
        discover(manifest)
    manifest.write_text("path,label,start_seconds,end_seconds\naudio/clip0.wav,normal,0.2,0.1\n")
    with pytest.raises(AcmonError, match=r"manifest.csv:2: end_seconds 0.1 is not after"):
        discover(manifest)


def test_manifest_missing_file_is_counted_not_fatal(tmp_path, caplog):
    _manifest_dataset(
        tmp_path, "path,label,fold\naudio/clip0.wav,normal,1\naudio/gone.wav,normal,2\naudio/clip1.wav,normal,2\n"
    )
    report = LoadReport()
    with caplog.at_level(logging.WARNING):
        records = discover(tmp_path, report=report)
    assert [r.path.name for r in records] == ["clip0.wav", "clip1.wav"]
    assert len(report.failed) == 1
    path, message = report.failed[0]
    assert path.name == "gone.wav" and "manifest.csv:3:" in message and "no such file" in message
    assert "manifest.csv:3:" in caplog.text


# --------------------------------------------------------------------------------------------------
# Audacity label tracks
# --------------------------------------------------------------------------------------------------
LABELS = (
    "2.000000\t3.000000\tbearing\n"
    "\\\t120.5\t3000.0\n"  # spectral selection of the label above: ignored
    "3.500000\t4.000000\trubbing\n"
    "6.0\t6.0\tclick\n"  # a point label marks no audio
)


def test_audacity_labels_give_spans_and_normal_gaps(tmp_path):
    wav = _wav(tmp_path / "long" / "recording.wav", seconds=10.0)
    wav.with_suffix(".txt").write_text(LABELS)
    assert read_audacity_labels(wav.with_suffix(".txt")) == [
        (2.0, 3.0, "bearing"),
        (3.5, 4.0, "rubbing"),
        (6.0, 6.0, "click"),
    ]
    records = discover(tmp_path / "long")
    # The 0.5 s gap between the two faults is shorter than one 1.04 s window: not used.
    assert [(r.label, r.start_seconds, r.end_seconds) for r in records] == [
        ("normal", 0.0, 2.0),
        ("bearing", 2.0, 3.0),
        ("rubbing", 3.5, 4.0),
        ("normal", 4.0, None),
    ]
    assert all(r.path == wav and r.machine_type == "long" for r in records)
    # With a shorter analysis window the short gap is kept.
    short = FeatureParams(window_samples=4096, hop_samples=2048)
    records = discover(tmp_path / "long", short)
    assert ("normal", 3.0, 3.5) in [(r.label, r.start_seconds, r.end_seconds) for r in records]


def test_audacity_label_past_the_end_and_unnamed(tmp_path):
    wav = _wav(tmp_path / "r.wav", seconds=3.0)
    wav.with_suffix(".txt").write_text("0,5\t1,0\n2.5\t9.0\tknock\n")  # decimal commas, no label text
    records = discover(wav)
    assert [(r.label, r.start_seconds, r.end_seconds) for r in records] == [
        ("anomaly", 0.5, 1.0),
        ("normal", 1.0, 2.5),
        ("knock", 2.5, 3.0),
    ]


def test_bad_label_track_is_counted_not_fatal(tmp_path):
    _wav(tmp_path / "good.wav")
    bad = _wav(tmp_path / "bad.wav")
    bad.with_suffix(".txt").write_text("1.0\t2.0\tx\nhello world\n")
    report = LoadReport()
    records = discover(tmp_path, report=report)
    assert [r.path.name for r in records] == ["good.wav"]
    assert report.failed[0][0] == bad and "bad.txt:2: not an Audacity label line" in report.failed[0][1]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def test_load_record_reads_exactly_the_span_resampled_and_mixed(tmp_path, caplog):
    wav = _wav(tmp_path / "field.wav", seconds=3.0, rate=44100, channels=2, fmt="int24")
    caplog.set_level(logging.INFO, logger="training.datasets")
    datasets._conversion_logged.clear()
    full = load_record(ClipRecord(wav, "normal"), SR)
    # The whole file: the same as reading, mixing down and resampling it in one go.
    samples, rate = read_wav(wav)
    assert rate == 44100
    np.testing.assert_array_equal(full, resample(to_mono(samples), 44100, SR))
    assert full.dtype == np.float32 and full.shape == (48000,)
    for start, end in [(0.73, 2.11), (0.0, 0.5), (1.0, None), (2.9999, None), (0.01, 0.0101)]:
        span = load_record(ClipRecord(wav, "x", start_seconds=start, end_seconds=end), SR)
        expected = full[round(start * SR) : None if end is None else round(end * SR)]
        np.testing.assert_array_equal(span, expected)
    messages = [r.getMessage() for r in caplog.records if "field.wav" in r.getMessage()]
    assert messages == [f"{wav}: 2 channels mixed down to mono; resampled 44100 Hz -> 16000 Hz"]


def test_load_record_channel_and_native_rate(tmp_path, caplog):
    wav = _wav(tmp_path / "stereo.wav", seconds=1.0, channels=2)
    samples, _ = read_wav(wav)
    caplog.set_level(logging.INFO, logger="training.datasets")
    datasets._conversion_logged.clear()
    span = load_record(ClipRecord(wav, "normal", start_seconds=0.25, end_seconds=0.5), SR, channel=1)
    np.testing.assert_array_equal(span, samples[4000:8000, 1])
    assert "channel 1 of 2 used" in caplog.text and "resampled" not in caplog.text
    with pytest.raises(AudioError, match=r"stereo.wav: channel 2 requested but the file has 2 channel"):
        load_record(ClipRecord(wav, "normal"), SR, channel=2)
    with pytest.raises(AudioError, match=r"stereo.wav \[1.500-end s\]: the span holds no audio"):
        load_record(ClipRecord(wav, "normal", start_seconds=1.5), SR)


def test_load_clip_unchanged(tmp_path):
    wav = _wav(tmp_path / "a.wav", seconds=0.5, rate=8000, channels=3, fmt="float32")
    samples, rate = read_wav(wav)
    np.testing.assert_array_equal(load_clip(wav, SR), resample(to_mono(samples), rate, SR).astype(np.float32))
    mono = _wav(tmp_path / "b.wav", seconds=0.5)
    np.testing.assert_array_equal(load_clip(mono, SR), read_wav(mono)[0][:, 0])


def test_corrupt_file_among_good_ones_is_counted_and_skipped(tmp_path, caplog):
    good = [_wav(tmp_path / f"g{i}.wav", seconds=0.5, seed=i) for i in range(2)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"ID3\x03 this is an mp3 really" * 10)
    records = discover(tmp_path)
    assert len(records) == 3  # discovery does not open plain files
    with caplog.at_level(logging.WARNING):
        clips, report = load_records(records, SR)
    assert len(clips) == 2 and report.loaded == good
    assert report.seconds == pytest.approx(1.0)
    [(path, message)] = report.failed
    assert path == bad and "bad.wav" in message and "looks like MP3" in message
    assert "bad.wav" in caplog.text and "1 unreadable file(s) skipped" in report.summary()
    clips, report = load_records([ClipRecord(good[0], "normal"), ClipRecord(bad, "normal")], SR)
    assert len(clips) == 1 and len(report.failed) == 1
