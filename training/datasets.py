"""Find and load training recordings, and cut them into patches with the device's own front end.

One clip list for every source of labelled audio: :func:`discover` turns a
DCASE 2020 Task 2 tree, a folder per label, a CSV manifest with folds, long
recordings with Audacity label tracks, or a plain folder of WAV files into
:class:`ClipRecord` entries, and :func:`load_record` reads exactly one
record's span as mono float32 at the model's sample rate.

Over 500 lines on purpose: a reader for each data layout people bring (with its own one-line errors for
the ways each goes wrong), sharing one clip record and one loader.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.analysis.features import FeatureParams
from device.audio.audio_io import MAX_SAMPLE_MAGNITUDE, WavReader, check_resampling, describe_wav, to_mono
from device.audio.resample import input_span, output_length, resample
from device.audio.sources import WAV_SUFFIXES
from device.errors import AcmonError, AudioError
from device.pipeline import iter_windows, window_patches

logger = logging.getLogger(__name__)

# DCASE 2020 Task 2 file names: normal_id_00_00000000.wav, anomaly_id_02_00000123.wav
DCASE_NAME = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<machine_id>\d+)_(?P<index>\d+)\.wav$", re.IGNORECASE)

# DCASE 2021-2023 Task 2 file names, optionally prefixed with the machine type and split (as in flat sample
# folders): section_00_source_train_normal_0000_<attributes>.wav, ToyCar_test_section_00_target_test_anomaly_0012_<...>.wav
DCASE_SECTION_NAME = re.compile(
    r"^(?:(?P<machine_type>[A-Za-z0-9-]+)_(?:(?:train|test)_)?)?section_(?P<machine_id>\d+)_(?:(?:source|target)_)?"
    r"(?P<split>train|test)_(?P<label>normal|anomaly)_(?P<index>\d+)(?:_[^/]*)?\.wav$",
    re.IGNORECASE,
)

NORMAL = "normal"
ANOMALY = "anomaly"
SPLITS = ("train", "test")

# CSV manifest columns: canonical name -> accepted header spellings (case-insensitive).
MANIFEST_COLUMNS = {
    "path": ("path", "file", "filename"),
    "label": ("label", "class"),
    "fold": ("fold",),
    "machine_type": ("machine_type",),
    "machine_id": ("machine_id", "section"),
    "split": ("split",),
    "start_seconds": ("start_seconds", "start"),
    "end_seconds": ("end_seconds", "end"),
}
MANIFEST_REQUIRED = ("path", "label")
# A fold named in a manifest path when there is no fold column: a folder 'fold3/' or a file name 'fold3_...'.
FOLD_IN_PATH = re.compile(r"(?:^|[/\\])fold(\d{1,3})(?:[/\\]|_)", re.IGNORECASE)
MANIFEST_NAME = "manifest.csv"
MANIFEST_HINT = "the first line must be a header such as path,label[,fold][,machine_type][,machine_id]"

# Audacity label tracks: "start<TAB>end<TAB>label" in seconds; spectral-selection lines start with a backslash.
AUDACITY_LABELS_SUFFIX = ".txt"

# Frames read per call when skipping to a span or reading a long one (bounded memory).
_READ_BLOCK_FRAMES = 1 << 18

# Files whose channel/resampling decision has been logged, so it is said once per file.
_conversion_logged: set[str] = set()


@dataclass(frozen=True)
class ClipRecord:
    """One labelled stretch of audio: a whole file, or a span inside a longer recording.

    Attributes:
        path: The WAV file.
        label: "normal", "anomaly" (unnamed fault) or a fault name such as "bearing_fault".
        machine_type: Machine type, e.g. "pump" (the DCASE machine folder, else the data folder's name).
        machine_id: Machine id as written in the file name or manifest, e.g. "00"; "" if unknown.
        split: "train", "test" or "" (not split by the dataset).
        fold: Cross-validation fold from a manifest, or None.
        start_seconds: Start of the span in the file, in seconds.
        end_seconds: End of the span in the file, in seconds; None means the end of the file.
    """

    path: Path
    label: str
    machine_type: str = ""
    machine_id: str = ""
    split: str = ""
    fold: int | None = None
    start_seconds: float = 0.0
    end_seconds: float | None = None

    @property
    def is_normal(self) -> bool:
        return self.label == NORMAL

    @property
    def is_span(self) -> bool:
        """True if the record is a part of its file rather than the whole file."""
        return self.start_seconds > 0.0 or self.end_seconds is not None

    def describe(self) -> str:
        """The file, plus the span in seconds if the record is part of it (for messages)."""
        if not self.is_span:
            return str(self.path)
        end = "end" if self.end_seconds is None else f"{self.end_seconds:.3f}"
        return f"{self.path} [{self.start_seconds:.3f}-{end} s]"


@dataclass
class LoadReport:
    """What loading a set of files did: files used, files skipped (with reasons), audio duration."""

    loaded: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"{len(self.loaded)} file(s), {self.seconds / 60:.1f} min of audio"
        if self.failed:
            text += f"; {len(self.failed)} unreadable file(s) skipped"
        return text


# ==================================================================================================
# Finding clips
# ==================================================================================================
def parse_dcase_name(name: str) -> dict[str, str] | None:
    """Label, machine id, split and machine type from a DCASE Task 2 file name (2020 or 2021-2023 style).

    Returns:
        dict with keys label ("normal" or "anomaly"), machine_id (digits as written), split ("train",
        "test" or "" if the name does not say) and machine_type ("" if the name does not say); None if
        the name follows neither convention.
    """
    m = DCASE_NAME.match(name)
    if m:
        return {"label": m["label"].lower(), "machine_id": m["machine_id"], "split": "", "machine_type": ""}
    m = DCASE_SECTION_NAME.match(name)
    if m:
        return {
            "label": m["label"].lower(),
            "machine_id": m["machine_id"],
            "split": m["split"].lower(),
            "machine_type": m["machine_type"] or "",
        }
    return None


def discover(
    data: str | Path,
    params: FeatureParams | None = None,
    *,
    report: LoadReport | None = None,
) -> list[ClipRecord]:
    """Every labelled clip under a data folder (or manifest), whatever its layout.

    Layouts, tried in this order:

    1. DCASE Task 2: ``MACHINE/train/normal_id_XX_NNNNNNNN.wav`` and
       ``MACHINE/test/{normal,anomaly}_id_XX_NNNNNNNN.wav`` (2021-2023 ``section_XX_..._normal_...``
       names too); ``data`` is the machine folder or a parent of several machine folders.
    2. A folder per label: ``DATA/normal/*.wav``, ``DATA/bearing_fault/*.wav``, ... (recognised by a
       ``normal`` subfolder; each label folder is searched recursively).
    3. A CSV manifest (``data`` is the .csv, or the folder holds ``manifest.csv`` or exactly one .csv
       with a path column): header ``path,label[,fold][,machine_type][,machine_id][,split]
       [,start_seconds][,end_seconds]`` (also accepted: file/filename for path, class for label,
       section for machine_id), paths relative to the CSV's folder; a DCASE file name fills in an
       empty split or machine id.
    4. Otherwise every .wav directly in the folder: a recording with an Audacity label track beside it
       (``recording.txt``: ``start<TAB>end<TAB>label`` in seconds) gives one record per labelled span
       and ``normal`` records for the gaps of at least one analysis window; a DCASE-named file keeps
       the label in its name; any other file is one ``normal`` record.

    Args:
        data: The data folder, a manifest .csv, or a single .wav file.
        params: Front-end parameters; their analysis window (window_seconds) is the shortest normal
            gap kept between Audacity labels. FeatureParams() if None.
        report: If given, files that are listed but missing or unreadable (manifest rows, label
            tracks, recordings whose length cannot be read) are appended to report.failed.

    Returns:
        Records sorted as found (by path, then span start).

    Raises:
        AcmonError: ``data`` does not exist, a manifest is malformed (the message names the line),
            or no usable clip was found.
    """
    params = params or FeatureParams()
    report = report if report is not None else LoadReport()
    root = Path(data)
    if not root.exists():
        raise AcmonError(f"{root}: no such file or folder; give a data folder, a manifest .csv or a .wav file")

    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".csv":
            records = _manifest_records(root, report)
        elif suffix in WAV_SUFFIXES:
            records = _plain_file_records([root], root.parent, params, report)
        else:
            raise AcmonError(f"{root}: not a data folder, .csv manifest or .wav file; give one of those")
        layout = "manifest" if suffix == ".csv" else "single file"
    else:
        layout, records = _discover_folder(root, params, report)

    if not records:
        detail = f"; {len(report.failed)} listed file(s) missing or unreadable" if report.failed else ""
        raise AcmonError(f"{root}: no usable clips found ({layout} layout){detail}")
    counts: dict[str, int] = {}
    for record in records:
        counts[record.label] = counts.get(record.label, 0) + 1
    logger.info(
        "%s: %s layout, %s clip(s): %s",
        root,
        layout,
        len(records),
        ", ".join(f"{n} {label}" for label, n in sorted(counts.items())),
    )
    if report.failed:
        logger.warning("%s: %s file(s) missing or unreadable were skipped", root, len(report.failed))
    return records


def _wavs_in(folder: Path, recursive: bool = False) -> list[Path]:
    """WAV files in a folder (sorted); recursive search skips folders starting with '.' or '_'."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in WAV_SUFFIXES and p.is_file())
    found = []
    for p in folder.rglob("*"):
        rel_parts = p.relative_to(folder).parts[:-1]
        if any(part.startswith((".", "_")) for part in rel_parts):
            continue
        if p.suffix.lower() in WAV_SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _is_dcase_machine_folder(folder: Path) -> bool:
    for split in SPLITS:
        sub = folder / split
        if sub.is_dir() and any(parse_dcase_name(p.name) for p in _wavs_in(sub)):
            return True
    return False


def _discover_folder(root: Path, params: FeatureParams, report: LoadReport) -> tuple[str, list[ClipRecord]]:
    """(layout name, records) for a folder; see discover()."""
    # 1. DCASE: the machine folder itself, or a parent of machine folders.
    if _is_dcase_machine_folder(root):
        return "DCASE", _dcase_records(root)
    machines = [sub for sub in _subfolders(root) if _is_dcase_machine_folder(sub)]
    if machines:
        logger.info("%s: DCASE machine folders: %s", root, ", ".join(m.name for m in machines))
        return "DCASE", [record for machine in machines for record in _dcase_records(machine)]

    # 2. A folder per label, recognised by its normal/ folder.
    subfolders = _subfolders(root)
    if any(sub.name.lower() == NORMAL and _wavs_in(sub, recursive=True) for sub in subfolders):
        records = []
        for sub in subfolders:
            label = _canonical_label(sub.name)
            for path in _wavs_in(sub, recursive=True):
                records.append(ClipRecord(path, label, machine_type=root.name))
        return "folder per label", records

    # 3. A CSV manifest.
    manifest = _find_manifest(root)
    if manifest is not None:
        return f"manifest {manifest.name}", _manifest_records(manifest, report)

    # 4. Plain folder (with Audacity label tracks where present).
    wavs = _wavs_in(root)
    if not wavs:
        nested = [sub.name for sub in subfolders if _wavs_in(sub, recursive=True)]
        hint = (
            (
                f"; subfolders {', '.join(nested[:5])} hold WAV files: for a folder per label put the normal "
                f"recordings in {root / NORMAL}, or give a manifest .csv"
            )
            if nested
            else ""
        )
        raise AcmonError(f"{root}: no .wav files found{hint}")
    return "plain folder", _plain_file_records(wavs, root, params, report)


def _dcase_records(machine_dir: Path) -> list[ClipRecord]:
    records = []
    for split in SPLITS:
        sub = machine_dir / split
        if not sub.is_dir():
            continue
        ignored = []
        for path in _wavs_in(sub):
            info = parse_dcase_name(path.name)
            if info is None:
                ignored.append(path.name)
                continue
            records.append(
                ClipRecord(
                    path, info["label"], machine_type=machine_dir.name, machine_id=info["machine_id"], split=split
                )
            )
        if ignored:
            logger.warning(
                "%s: %s .wav file(s) without a DCASE name (normal_id_XX_NNNNNNNN.wav) ignored, e.g. %s",
                sub,
                len(ignored),
                ignored[0],
            )
    return records


def _canonical_label(text: str) -> str:
    """'Normal' -> 'normal', 'anomalous'/'abnormal' -> 'anomaly'; other labels as written (stripped)."""
    label = text.strip()
    lower = label.lower()
    if lower == NORMAL:
        return NORMAL
    if lower in (ANOMALY, "anomalous", "abnormal"):
        return ANOMALY
    return label


# --------------------------------------------------------------------------------------------------
# CSV manifest
# --------------------------------------------------------------------------------------------------
def _find_manifest(folder: Path) -> Path | None:
    named = folder / MANIFEST_NAME
    if named.is_file():
        return named
    csvs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if len(csvs) == 1 and _header_columns(csvs[0]).get("path") is not None:
        return csvs[0]
    if len(csvs) > 1:
        logger.debug(
            "%s: %s .csv files and none named %s; not using any as a manifest", folder, len(csvs), MANIFEST_NAME
        )
    return None


def _header_columns(csv_path: Path, header: Sequence[str] | None = None) -> dict[str, int | None]:
    """Canonical column name -> index in the header row (None if absent)."""
    if header is None:
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                header = next((row for row in csv.reader(fh) if row), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return {}
    names = [h.strip().lower() for h in header]
    columns: dict[str, int | None] = {}
    for canonical, spellings in MANIFEST_COLUMNS.items():
        columns[canonical] = next((names.index(s) for s in spellings if s in names), None)
    return columns


def _manifest_records(csv_path: Path, report: LoadReport) -> list[ClipRecord]:
    """Records from a CSV manifest; missing files are counted in report, malformed rows raise."""
    try:
        fh = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise AcmonError(f"{csv_path}: cannot open: {e.strerror or e}; check the path and permissions") from None
    records = []
    missing = 0
    with fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        columns: dict[str, int | None] = {}
        try:
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                    continue
                if header is None:
                    header = row
                    columns = _header_columns(csv_path, header)
                    if row[0].strip().lower().endswith(WAV_SUFFIXES):
                        raise AcmonError(
                            f"{csv_path}:{line}: no header row ({row[0].strip()!r} looks like a file); {MANIFEST_HINT}"
                        )
                    for name in MANIFEST_REQUIRED:
                        if columns[name] is None:
                            spellings = " or ".join(repr(s) for s in MANIFEST_COLUMNS[name])
                            raise AcmonError(
                                f"{csv_path}:{line}: missing column {spellings} in header "
                                f"{','.join(h.strip() for h in row)}; {MANIFEST_HINT}"
                            )
                    continue
                record = _manifest_row(csv_path, line, row, header, columns)
                if not record.path.is_file():
                    missing += 1
                    message = f"{csv_path}:{line}: {record.path}: no such file; fix the path or remove the line"
                    logger.warning("%s", message)
                    report.failed.append((record.path, message))
                    continue
                records.append(record)
        except UnicodeDecodeError:
            raise AcmonError(f"{csv_path}: not UTF-8 text; save the manifest as UTF-8 CSV") from None
        except csv.Error as e:
            raise AcmonError(
                f"{csv_path}:{reader.line_num}: malformed CSV: {e}; fix the quoting on that line"
            ) from None
    if header is None:
        raise AcmonError(f"{csv_path}: empty manifest; {MANIFEST_HINT}")
    if missing:
        logger.warning("%s: %s listed file(s) missing, skipped", csv_path, missing)
    return records


def _manifest_row(
    csv_path: Path, line: int, row: list[str], header: list[str], columns: dict[str, int | None]
) -> ClipRecord:
    where = f"{csv_path}:{line}"
    if len(row) > len(header):
        raise AcmonError(
            f"{where}: {len(row)} values but the header has {len(header)} columns; quote values that contain commas"
        )

    def value(name: str) -> str:
        index = columns.get(name)
        return row[index].strip() if index is not None and index < len(row) else ""

    for name in MANIFEST_REQUIRED:
        if not value(name):
            raise AcmonError(f"{where}: empty {name!r}; every line needs a path and a label")
    path = Path(value("path"))
    if not path.is_absolute():
        given = path
        path = csv_path.parent / given
        if not path.exists() and given.parts and given.parts[0] == csv_path.parent.name:
            # A path that starts with the dataset's own folder (urbansound8k_subset/audio/...): relative to the
            # folder that holds the dataset, as a manifest written for several datasets side by side has it.
            path = csv_path.parent.parent / given

    fold = None
    fold_text = value("fold")
    if columns.get("fold") is None:
        # No fold column: UrbanSound8K's own layout names the fold in the path (audio/fold3/..., or fold3_... once
        # flattened), and its folds are meant to be kept (clips of one recording share a fold).
        named_fold = FOLD_IN_PATH.search(value("path"))
        fold = int(named_fold.group(1)) if named_fold else None
    else:
        try:
            fold = int(fold_text)
        except ValueError:
            fold = None
        if fold is None or fold < 0:
            raise AcmonError(
                f"{where}: fold {fold_text!r} is not a whole number >= 0; give the fold (e.g. 1 to 10) of every line"
            )

    split = value("split").lower()
    if split and split not in SPLITS:
        raise AcmonError(
            f"{where}: split {value('split')!r} is not 'train' or 'test'; use one of those or leave it empty"
        )

    start, end = 0.0, None
    for name in ("start_seconds", "end_seconds"):
        text = value(name)
        if not text:
            continue
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not math.isfinite(seconds) or seconds < 0:
            raise AcmonError(f"{where}: {name} {text!r} is not a time in seconds >= 0; fix or leave it empty")
        if name == "start_seconds":
            start = seconds
        else:
            end = seconds
    if end is not None and end <= start:
        raise AcmonError(f"{where}: end_seconds {end:g} is not after start_seconds {start:g}; fix the span")

    # A DCASE-style file name fills in what the manifest leaves out.
    named = parse_dcase_name(path.name) or {}
    return ClipRecord(
        path,
        _canonical_label(value("label")),
        machine_type=value("machine_type") or named.get("machine_type") or csv_path.parent.name,
        machine_id=value("machine_id") or named.get("machine_id", ""),
        split=split or named.get("split", ""),
        fold=fold,
        start_seconds=start,
        end_seconds=end,
    )


def folds(records: Iterable[ClipRecord]) -> list[int]:
    """The cross-validation folds present, sorted (records without a fold are ignored)."""
    return sorted({r.fold for r in records if r.fold is not None})


def split_by_fold(records: Sequence[ClipRecord], test_fold: int) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Leave-one-fold-out split, as UrbanSound8K's 10-fold cross-validation.

    Args:
        records: Records from a manifest with a fold column.
        test_fold: The fold held out for testing.

    Returns:
        (train, test): test holds the records of test_fold, train all others (including records
        without a fold).

    Raises:
        AcmonError: no record has a fold, or test_fold is not one of them.
    """
    present = folds(records)
    if not present:
        raise AcmonError("no fold numbers in the clip list; add a fold column to the manifest for cross-validation")
    if test_fold not in present:
        raise AcmonError(
            f"test fold {test_fold} not in the manifest (folds: {', '.join(map(str, present))}); choose one of those"
        )
    train = [r for r in records if r.fold != test_fold]
    test = [r for r in records if r.fold == test_fold]
    return train, test


# --------------------------------------------------------------------------------------------------
# Plain folders and Audacity label tracks
# --------------------------------------------------------------------------------------------------
def _plain_file_records(
    wavs: Sequence[Path], folder: Path, params: FeatureParams, report: LoadReport
) -> list[ClipRecord]:
    folder_split = folder.name.lower() if folder.name.lower() in SPLITS else ""
    folder_type = folder.parent.name if folder_split else folder.name
    records = []
    for path in wavs:
        labels = path.with_suffix(AUDACITY_LABELS_SUFFIX)
        if labels.is_file():
            try:
                records.extend(audacity_records(path, labels, params, machine_type=folder_type, split=folder_split))
            except AcmonError as exc:
                logger.warning("skipping %s", exc)
                report.failed.append((path, str(exc)))
            continue
        info = parse_dcase_name(path.name)
        if info is not None:
            records.append(
                ClipRecord(
                    path,
                    info["label"],
                    machine_type=info["machine_type"] or folder_type,
                    machine_id=info["machine_id"],
                    split=info["split"] or folder_split,
                )
            )
        else:
            records.append(ClipRecord(path, NORMAL, machine_type=folder_type, split=folder_split))
    return records


def read_audacity_labels(labels_path: str | Path) -> list[tuple[float, float, str]]:
    """Read an Audacity label track exported as text (File > Export > Export Labels).

    Each line is ``start<TAB>end<TAB>label`` with times in seconds; lines starting with a backslash
    hold a label's spectral selection (low and high frequency) and are ignored. A missing label text
    means "anomaly". A decimal comma (some locales) is accepted.

    Returns:
        (start_seconds, end_seconds, label) in file order.

    Raises:
        AcmonError: the file cannot be read or a line is not a label (the message names the line).
    """
    path = Path(labels_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise AcmonError(f"{path}: cannot read label track: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AcmonError(f"{path}: label track is not UTF-8 text; export it again from Audacity") from None
    labels = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        try:
            start, end = (float(f.strip().replace(",", ".")) for f in fields[:2])
        except ValueError:
            raise AcmonError(
                f"{path}:{line_no}: not an Audacity label line (expected start<TAB>end<TAB>label in "
                f"seconds, got {line.strip()[:40]!r}); export the labels again from Audacity"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
            raise AcmonError(f"{path}:{line_no}: label span {start:g}-{end:g} s is not a valid time range; fix it")
        label = fields[2].strip() if len(fields) > 2 else ""
        labels.append((start, end, _canonical_label(label) if label else ANOMALY))
    return labels


def audacity_records(
    wav_path: str | Path,
    labels_path: str | Path,
    params: FeatureParams | None = None,
    machine_type: str = "",
    split: str = "",
) -> list[ClipRecord]:
    """Records for one long recording with an Audacity label track.

    Each labelled region is a record with its label; the stretches between (and around) labelled
    regions are ``normal`` records, except those shorter than one analysis window
    (params.window_seconds), which could not make a single model input. Point labels (start == end)
    mark no audio and are skipped with a warning. Labels past the end of the recording are cut at
    its end.

    Raises:
        AcmonError: the recording or the label track cannot be read.
    """
    params = params or FeatureParams()
    wav_path = Path(wav_path)
    duration = describe_wav(wav_path)["duration_seconds"]
    spans = []
    for start, end, label in read_audacity_labels(labels_path):
        if end == start:
            logger.warning(
                "%s: point label %r at %.3f s marks no audio and is ignored; drag to select a region",
                labels_path,
                label,
                start,
            )
            continue
        if start >= duration:
            logger.warning(
                "%s: label %r starts at %.3f s, after the end of %s (%.3f s); ignored",
                labels_path,
                label,
                start,
                wav_path,
                duration,
            )
            continue
        if end > duration:
            logger.warning(
                "%s: label %r ends at %.3f s, after the end of the recording (%.3f s); cut there",
                labels_path,
                label,
                end,
                duration,
            )
            end = duration
        spans.append((start, end, label))

    records = [
        ClipRecord(wav_path, label, machine_type=machine_type, split=split, start_seconds=start, end_seconds=end)
        for start, end, label in spans
    ]
    # Normal gaps: the complement of the union of labelled regions.
    cursor = 0.0
    skipped = 0
    for start, end, _ in sorted(spans) + [(duration, duration, "")]:
        if start > cursor:
            if start - cursor >= params.window_seconds - 1e-9:
                records.append(
                    ClipRecord(
                        wav_path,
                        NORMAL,
                        machine_type=machine_type,
                        split=split,
                        start_seconds=cursor,
                        end_seconds=None if start >= duration else start,
                    )
                )
            else:
                skipped += 1
        cursor = max(cursor, end)
    if skipped:
        logger.debug(
            "%s: %s gap(s) shorter than one analysis window (%.2f s) not used as normal audio",
            wav_path,
            skipped,
            params.window_seconds,
        )
    return sorted(records, key=lambda r: (r.start_seconds, r.label))


# ==================================================================================================
# Loading
# ==================================================================================================
def _read_frames(reader: WavReader, n_frames: int) -> np.ndarray:
    """Up to n_frames from the reader's position, (k, channels) float32.

    Raises:
        AudioError: a sample read is NaN, infinite or beyond MAX_SAMPLE_MAGNITUDE. Training on it would
            poison the model's statistics (one NaN makes every mean NaN), so the file is refused, naming
            where the damage starts; load_records then skips it like any unreadable file.
    """
    blocks = []
    while n_frames > 0:
        block = reader.read(min(n_frames, _READ_BLOCK_FRAMES))
        if block.shape[0] == 0:
            break
        blocks.append(block)
        n_frames -= block.shape[0]
    if reader.nonfinite_samples:
        first_seconds = reader.first_nonfinite_frame / reader.sample_rate_hz
        raise AudioError(
            f"{reader.path}: {reader.nonfinite_samples} sample(s) are NaN, infinite or beyond "
            f"{MAX_SAMPLE_MAGNITUDE:g} full scale (first at {first_seconds:.3f} s); "
            "the recording is damaged: export it again, or remove it from the training data"
        )
    if not blocks:
        return np.zeros((0, reader.channels), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _log_conversion_once(reader: WavReader, channel: int | None, sample_rate_hz: int) -> None:
    key = str(reader.path)
    if key in _conversion_logged:
        return
    what = []
    if reader.channels > 1:
        if channel is None:
            what.append(f"{reader.channels} channels mixed down to mono")
        else:
            what.append(f"channel {channel} of {reader.channels} used")
    if reader.sample_rate_hz != sample_rate_hz:
        what.append(f"resampled {reader.sample_rate_hz} Hz -> {sample_rate_hz} Hz")
    if what:
        _conversion_logged.add(key)
        logger.info("%s: %s", reader.path, "; ".join(what))


def load_record(record: ClipRecord, sample_rate_hz: int, channel: int | None = None) -> np.ndarray:
    """The record's span as mono float32 at sample_rate_hz, reading only what the span needs.

    The reader seeks straight to the span, so cutting 5 s out of an hour-long recording reads 5 s. With resampling, the span is read with a margin of one filter
    length on each side and cut on the output sample grid, so the result is bit-identical to
    resampling the whole file and slicing samples round(start * rate) to round(end * rate).
    Multichannel audio is mixed down (mean) unless channel is given; which, and any resampling,
    is logged once per file at INFO.

    Args:
        record: The clip; start_seconds/end_seconds select the span.
        sample_rate_hz: The model's sample rate in Hz.
        channel: 0-based channel to use; None mixes all channels down.

    Returns:
        float32 array (n,), full scale 1.0, n = round(end * sample_rate_hz) - round(start * sample_rate_hz)
        (the end clamped to the file's end).

    Raises:
        AcmonError: the file cannot be read, the channel does not exist, the span is empty, the span (with
            its resampling margin) holds NaN, infinite or absurd samples, or the rate cannot be resampled.
    """
    path = record.path
    with WavReader(path) as reader:
        rate, n_in = reader.sample_rate_hz, reader.n_frames
        if n_in == 0:
            raise AudioError(f"{reader.path}: no audio samples (0 frames); record or choose a non-empty file")
        if channel is not None and (isinstance(channel, bool) or not 0 <= channel < reader.channels):
            raise AudioError(
                f"{reader.path}: channel {channel!r} requested but the file has {reader.channels} "
                f"channel(s) (valid: 0 to {reader.channels - 1}); set a channel in that range"
            )
        _log_conversion_once(reader, channel, sample_rate_hz)

        if rate == sample_rate_hz:
            first = round(record.start_seconds * rate)
            last = n_in if record.end_seconds is None else min(n_in, round(record.end_seconds * rate))
            if first >= last:
                raise AudioError(
                    f"{record.describe()}: the span holds no audio (the file is {n_in / rate:.3f} s long); fix the span"
                )
            reader.seek(min(first, reader.n_frames))
            return to_mono(_read_frames(reader, last - first), channel)

        check_resampling(reader.path, rate, sample_rate_hz)
        # Resampling: outputs m0..m1 on the output grid of the whole file, from only the input they
        # depend on (input_span says which, and where the local grid meets the global one).
        n_out_total = output_length(n_in, rate, sample_rate_hz)
        m0 = round(record.start_seconds * sample_rate_hz)
        m1 = n_out_total if record.end_seconds is None else min(n_out_total, round(record.end_seconds * sample_rate_hz))
        if m0 >= m1:
            raise AudioError(
                f"{record.describe()}: the span holds no audio (the file is {n_in / rate:.3f} s long); fix the span"
            )
        first, last, offset = input_span(n_in, rate, sample_rate_hz, m0, m1)
        reader.seek(min(first, reader.n_frames))
        mono = to_mono(_read_frames(reader, last - first), channel)
    out = resample(mono, rate, sample_rate_hz)[m0 - offset : m1 - offset]
    return out.astype(np.float32, copy=False)


def load_clip(path: Path, sample_rate_hz: int, channel: int | None = None) -> np.ndarray:
    """A recording as mono float32 at sample_rate_hz (polyphase resampling when needed)."""
    return load_record(ClipRecord(Path(path), NORMAL), sample_rate_hz, channel)


def load_records(
    records: Sequence[ClipRecord],
    sample_rate_hz: int,
    channel: int | None = None,
    progress: bool = False,
) -> tuple[list[np.ndarray], LoadReport]:
    """Load many records; an unreadable one is logged (warning naming it), counted and skipped, never fatal.

    Args:
        records: Clips to load.
        sample_rate_hz: The model's sample rate in Hz.
        channel: 0-based channel; None mixes down.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        (clips, report): clips are float32 (n,) arrays in the order of the records that loaded;
        report.loaded has their paths (a file appears once per span), report.failed the others
        with the reason.
    """
    report = LoadReport()
    clips = []
    for record in tqdm(records, desc="loading", unit="clip", disable=not progress, leave=False):
        try:
            clip = load_record(record, sample_rate_hz, channel)
        except AcmonError as exc:
            logger.warning("skipping %s", exc)
            report.failed.append((record.path, str(exc)))
            continue
        clips.append(clip)
        report.loaded.append(record.path)
        report.seconds += len(clip) / sample_rate_hz
    if report.failed:
        logger.warning("%s of %s clip(s) unreadable and skipped", len(report.failed), len(records))
    return clips, report


def clip_patches(clips: Iterable[np.ndarray], params: FeatureParams, hop_samples: int | None = None) -> np.ndarray:
    """Normalized log-mel patches of whole clips, windowed exactly as the device windows a stream.

    Args:
        clips: mono float32 arrays at params.sample_rate_hz.
        hop_samples: window step; the device's params.hop_samples unless given.

    Returns:
        float32 (n_patches, n_frames, n_mels).
    """
    patches = [patch for clip in clips for patch in window_patches(iter_windows([clip], params, hop_samples), params)]
    if not patches:
        return np.zeros((0, *params.patch_shape), dtype=np.float32)
    return np.stack(patches).astype(np.float32)
