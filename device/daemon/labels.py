"""Feedback into training: alarms labelled on site (`cmd/label`) become a dataset that `training fit` reads.

`cmd/label {"event_id", "label"}` copies the event's evidence clip into the device's dataset,
`<state directory>/dataset/<site>/<device id>/<folder>/<clip>.wav`: `false_alarm` goes to
`normal/` (the machine was fine), a fault name to a folder of that name. A clip is in one folder
only: labelling it again moves it. The layout is training's "folder per label" (training/datasets.py),
and `python -m device export-labels` writes the CSV manifest (`path,label`) that `training fit` reads,
so a labelled fault becomes a class of a supervised model. The false alarms also join the next
on-site calibration's normal audio (Runner.finish_calibration), so the site's statistics and
threshold learn that those sounds were normal.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

from ..audio.audio_io import write_wav
from ..errors import AcmonError
from ..evidence.clips import AUDIO_SUFFIXES, evidence_files, read_flac_as_float, withheld_reason
from ..settings.schema import NAME_PATTERN, AcmonConfig
from ..state import atomic_write, make_private_directory, state_root

FALSE_ALARM = "false_alarm"
NORMAL_FOLDER = "normal"  # training's name for the machine running normally
LABEL_PATTERN = NAME_PATTERN  # a label is a name, as a site or a device id is
RESERVED = {"normal"}  # say false_alarm: the clip raised an alarm, and the machine was fine
MAX_DATASET_CLIPS = 5000


def dataset_folder(cfg: AcmonConfig, environ=os.environ) -> Path:
    return state_root(environ) / "dataset" / cfg.device.site / cfg.device.id


def folder_for(label: str) -> str:
    """The dataset folder of a label: false_alarm -> normal, a fault name -> itself.

    Raises:
        AcmonError: not a label (letters, digits, '_' or '-', 1 to 64), or 'normal' (say false_alarm).
    """
    if not re.fullmatch(LABEL_PATTERN, label):
        raise AcmonError(f"label: {label[:40]!r} is not a label (1 to 64 letters, digits, '_' or '-')")
    if label.lower() in RESERVED:
        raise AcmonError("label: say 'false_alarm' for an alarm on a machine that was running normally")
    return NORMAL_FOLDER if label == FALSE_ALARM else label


def store_label(evidence_directory: Path, dataset: Path, event_id: str, label: str) -> Path:
    """Copy an event's evidence WAV into the dataset folder of its label (moving it from any other); returns it.

    Raises:
        AcmonError: a bad label, no evidence for the event, a full dataset, or a file that cannot be written.
    """
    folder = folder_for(label)
    wavs = [p for p in evidence_files(evidence_directory, event_id) if p.suffix in AUDIO_SUFFIXES]
    withheld = withheld_reason(evidence_directory, event_id)
    if withheld is not None:
        raise AcmonError(f"label: event {event_id}: {withheld}; there is no clip to keep")
    if not wavs:
        raise AcmonError(
            f"label: no evidence clip for event {event_id} (written evidence.post_roll_seconds after the alarm, "
            "removed by the evidence retention); only alarms with a clip can be labelled"
        )
    source = wavs[0]
    name = source.stem + ".wav"  # training reads WAV: a FLAC clip is stored decoded
    existing = list(dataset.glob(f"*/{name}"))
    if not existing and sum(1 for _ in dataset.glob("*/*.wav")) >= MAX_DATASET_CLIPS:
        raise AcmonError(f"label: the dataset {dataset} holds {MAX_DATASET_CLIPS} clips; export and clear it first")
    target = dataset / folder / name
    try:
        make_private_directory(target.parent)
        if source.suffix == ".flac":
            samples, rate = read_flac_as_float(source)
            write_wav(target, samples, rate)
        else:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        for old in existing:
            if old != target:
                old.unlink(missing_ok=True)
    except OSError as exc:
        raise AcmonError(f"label: cannot write {target}: {exc.strerror or exc}") from None
    return target


def labelled_clips(dataset: Path) -> list[tuple[Path, str]]:
    """(clip, label) for every clip in the dataset; false alarms are labelled 'normal', as training reads them."""
    if not dataset.is_dir():
        return []
    return [
        (wav, folder.name)
        for folder in sorted(p for p in dataset.iterdir() if p.is_dir() and re.fullmatch(LABEL_PATTERN, p.name))
        for wav in sorted(folder.glob("*.wav"))
    ]


def false_alarm_clips(dataset: Path) -> list[Path]:
    return [wav for wav, label in labelled_clips(dataset) if label == NORMAL_FOLDER]


def export_manifest(dataset: Path, out: Path | None = None) -> tuple[Path, dict[str, int]]:
    """Write the dataset's CSV manifest (path,label; absolute paths) for `training fit --data FILE`.

    Returns:
        (the manifest's path, clips per label).

    Raises:
        AcmonError: the dataset is empty, or the manifest cannot be written.
    """
    clips = labelled_clips(dataset)
    if not clips:
        raise AcmonError(f"export-labels: no labelled clips in {dataset}; label alarms with the MQTT command label")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label"])
    counts: dict[str, int] = {}
    for wav, label in clips:
        writer.writerow([str(wav.resolve()), label])
        counts[label] = counts.get(label, 0) + 1
    target = out or dataset / "manifest.csv"
    try:
        atomic_write(target, text.getvalue().encode())
    except OSError as exc:
        raise AcmonError(f"export-labels: cannot write {target}: {exc.strerror or exc}") from None
    return target, counts
