"""The device's dataset of labelled alarms: folders per label, FLAC clips stored as WAV, refusals in one line."""

from __future__ import annotations

import numpy as np
import pytest

from device.audio.audio_io import read_wav, write_wav
from device.daemon.labels import export_manifest, false_alarm_clips, store_label
from device.errors import AcmonError

EVENT = "0123456789ab" + "c" * 20


def test_a_flac_clip_is_stored_as_wav_and_labels_move_it(tmp_path):
    import soundfile

    evidence, dataset = tmp_path / "evidence", tmp_path / "dataset"
    evidence.mkdir()
    x = (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    soundfile.write(str(evidence / f"20200101T000000Z_{EVENT[:12]}.flac"), x, 16000, subtype="PCM_16")
    stored = store_label(evidence, dataset, EVENT, "false_alarm")
    assert stored == dataset / "normal" / f"20200101T000000Z_{EVENT[:12]}.wav"
    samples, rate = read_wav(stored)
    assert rate == 16000 and np.max(np.abs(samples.reshape(-1) - x)) < 1e-4
    assert false_alarm_clips(dataset) == [stored]
    moved = store_label(evidence, dataset, EVENT, "bearing")
    assert moved.parent.name == "bearing" and not stored.exists() and false_alarm_clips(dataset) == []
    manifest, counts = export_manifest(dataset)
    assert counts == {"bearing": 1} and manifest.read_text().splitlines()[1].endswith(",bearing")


@pytest.mark.parametrize(("label", "needle"), [("normal", "false_alarm"), ("a/b", "not a label"), ("", "not a label")])
def test_bad_labels_are_refused(tmp_path, label, needle):
    write_wav(tmp_path / f"20200101T000000Z_{EVENT[:12]}.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(AcmonError, match=needle):
        store_label(tmp_path, tmp_path / "dataset", EVENT, label)
