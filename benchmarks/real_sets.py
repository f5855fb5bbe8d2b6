"""Evaluation sets built from REAL recordings, materialized in the DCASE 2020 Task 2 layout in a work folder.

Usage:
    python benchmarks/real_sets.py --work DIR [--shared ../shared] [--seed 0] [--sets real-fan ...]

For reporting only: these sets are small (a few to a few dozen clips per group) and several have a
known bias, stated in each group's note. They exist so that a detection benchmark says what users will
see on real machines, not only on synthetic sound. Nothing here may steer a design choice on its own.

The recordings are the shared development data (``../shared/data/real`` and
``../shared/data/dcase2023_samples``, see their README.md and manifest.csv; licences CC BY-NC-SA 4.0,
CC BY-SA 4.0 and CC BY 4.0: research and testing only). They are never copied into the repository:
whole files are symlinked into the work folder, cut or injected clips are written there.

Sets (one model is fitted per group = per machine folder ``WORK/<set>/<machine_type>``):

- ``real-fan``: train on the 75 normal clips of DCASE 2020 Task 2 id_00 (almost surely the fan);
  test on the MIMII fan clips (10 normal + 10 abnormal from mimii_becode_demo_arlene, the channel-0
  normal/abnormal pair of mimii_misc) and the one id_00 test anomaly.
- ``real-dcase2020-dev``: per type (ToyCar, ToyConveyor, fan, pump, slider, valve), the 3 normal and 3
  anomalous dev clips of one machine id. No training clips exist, so each clip is cut in two:
  train = the first ``HALF_SECONDS`` of the 3 normal clips, test = the last ``HALF_SECONDS`` of the 3
  normal and the 3 anomalous clips (ToyCar clips are 11 s: 1 s between the halves is unused).
  Leave-one-out was rejected: its three folds would be three models whose scores cannot be pooled
  into one AUC, and each fold would train on only two clips.
- ``real-dcase2023``: per machine type, train on its 2 train normals, test on its 2 test clips; only
  types whose test clips are one normal and one anomaly (ToyTrain, bearing, fan, gearbox, valve);
  ToyCar and slider are omitted: both their test clips are normal.
- ``injected-fan``: ``fault_injection.make_injected_dataset`` on the 75 id_00 normals (sorted by
  name): the first ``INJECTED_FAN_TRAIN`` train, the other 25 are held out as test normals and as the
  base for injection, each (kind, level) pair on ``INJECTED_FAN_CLIPS_PER_PAIR`` of them.
- ``injected-dcase2020``: injection into the DCASE 2020 dev normals of each type, cut as in
  real-dcase2020-dev: train = the first halves of the 3 normal clips, held out = their last halves
  (3 test normals, each injected with every (kind, level) pair). The MIMII valve normals of mimii_misc
  were rejected: 3 files of which 2 are the same recording (one quieter) and 1 is another machine.

Manifest: ``WORK/manifest.csv`` lists every clip of the sets built: path (relative to WORK), set,
machine_type, split, label (normal/anomaly), fault (empty for normals, ``real`` for recorded
anomalies, the fault kind for injected ones), level (injected only) and source (the original
recording relative to the shared data folder, with ``#t=START,END`` in seconds for a cut). The
injected sets also have their own ``WORK/<set>/manifest.csv`` and ``injections.jsonl`` (every
injected clip's random parameters).

File names in the machine folders are DCASE 2020 names with machine id 00 for every clip, also for
clips whose real machine id is another or unknown (the manifest's source says which recording each
is), so that each group is one machine id and gives one AUC.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# One OpenBLAS thread, as device/__init__.py sets for the daemon: the front end's matrix products are
# tiny, and on a busy 2-core machine BLAS threads made every window 20-40x slower. Before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fault_injection import FAULT_KINDS, make_injected_dataset
from device.audio.audio_io import describe_wav, read_wav, to_mono, write_wav
from device.audio.resample import resample

logger = logging.getLogger(__name__)

SET_NAMES: tuple[str, ...] = ("real-fan", "real-dcase2020-dev", "real-dcase2023", "injected-fan", "injected-dcase2020")
SAMPLE_RATE_HZ = 16000
DEV_TYPES: tuple[str, ...] = ("ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve")
HALF_SECONDS = 5.0
INJECTED_FAN_TRAIN = 50
INJECTED_FAN_CLIPS_PER_PAIR = 10
MACHINE_ID = "00"
MANIFEST_COLUMNS = ("path", "set", "machine_type", "split", "label", "fault", "level", "source")
MARKER = ".real_sets"

ID00 = "real/dcase2020t2_id00_zyy438"
DEV = "real/dcase2020t2_demo_cromerow"
BECODE = "real/mimii_becode_demo_arlene"
MISC = "real/mimii_misc"
DCASE2023 = "dcase2023_samples"


@dataclass(frozen=True)
class RealGroup:
    """One machine folder of one set: one model is fitted per group (on data_dir/train), scored on data_dir/test."""

    set_name: str
    machine_type: str
    data_dir: Path
    n_train: int
    n_test_normal: int
    n_test_anomaly: int
    note: str


@dataclass(frozen=True)
class _Source:
    path: Path  # absolute
    name: str  # relative to the shared data folder, for the manifest
    label: str  # normal / anomaly


def data_root(shared_dir: str | Path) -> Path:
    """The folder holding real/ and dcase2023_samples/: shared_dir/data, or shared_dir itself."""
    shared = Path(shared_dir)
    for candidate in (shared / "data", shared):
        if (candidate / "real").is_dir():
            return candidate
    raise FileNotFoundError(f"{shared}: no real/ folder in it or in its data/ folder (expected ../shared/data/real)")


def _read_manifest(root: Path, folder: str) -> list[dict]:
    path = root / folder / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the shared data folder is incomplete")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sources(root: Path, folder: str, predicate) -> list[_Source]:
    """Manifest rows of a real/ folder (paths relative to real/) that satisfy predicate, sorted by path."""
    found = []
    for row in _read_manifest(root, folder):
        if predicate(row):
            rel = f"real/{row['path']}"
            label = "anomaly" if row["is_anomaly"].strip() == "1" else "normal"
            found.append(_Source(root / rel, rel, label))
    for s in found:
        if not s.path.is_file():
            raise FileNotFoundError(f"{s.path}: listed in {folder}/manifest.csv but missing")
    return sorted(found, key=lambda s: s.name)


def _load_segment(path: Path, start_s: float | None, end_s: float | None) -> tuple[np.ndarray, str]:
    """Channel 0 at SAMPLE_RATE_HZ, cut to [start_s, end_s); and the WAV format that keeps it exact."""
    info = describe_wav(path)
    samples, rate = read_wav(path)
    x = to_mono(samples, channel=0)
    if rate != SAMPLE_RATE_HZ:
        x = resample(x, rate, SAMPLE_RATE_HZ)
    if start_s is not None:
        a = int(round(start_s * SAMPLE_RATE_HZ))
        b = len(x) if end_s is None else int(round(end_s * SAMPLE_RATE_HZ))
        if not 0 <= a < b <= len(x):
            raise ValueError(f"{path}: cannot cut {start_s}-{end_s} s from {len(x) / SAMPLE_RATE_HZ:.2f} s")
        x = x[a:b]
    exact_int16 = info["sample_format"] == "pcm_s16" and rate == SAMPLE_RATE_HZ
    return x, ("int16" if exact_int16 else "float32")


class _GroupWriter:
    """Fills one machine folder with DCASE-named clips and collects their manifest rows."""

    def __init__(self, work: Path, set_name: str, machine_type: str):
        self.work, self.set_name, self.machine_type = work, set_name, machine_type
        self.data_dir = work / set_name / machine_type
        (self.data_dir / "train").mkdir(parents=True)
        (self.data_dir / "test").mkdir()
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.rows: list[dict] = []

    def add(self, split: str, source: _Source, segment: tuple[float, float] | None = None) -> None:
        label = source.label
        index = self.counts[(split, label)]
        self.counts[(split, label)] += 1
        dst = self.data_dir / split / f"{label}_id_{MACHINE_ID}_{index:08d}.wav"
        name = source.name
        info = describe_wav(source.path)
        if segment is None and info["channels"] == 1 and info["sample_rate_hz"] == SAMPLE_RATE_HZ:
            _link(source.path, dst)
        else:
            x, fmt = _load_segment(source.path, *(segment or (None, None)))
            write_wav(dst, x, SAMPLE_RATE_HZ, fmt)
            if segment is not None:
                name = f"{name}#t={segment[0]:g},{segment[1]:g}"
        self.rows.append(
            {
                "path": dst.relative_to(self.work).as_posix(),
                "set": self.set_name,
                "machine_type": self.machine_type,
                "split": split,
                "label": label,
                "fault": "real" if label == "anomaly" else "",
                "level": "",
                "source": name,
            }
        )

    def group(self, note: str) -> RealGroup:
        return RealGroup(
            self.set_name,
            self.machine_type,
            self.data_dir,
            self.counts[("train", "normal")],
            self.counts[("test", "normal")],
            self.counts[("test", "anomaly")],
            note,
        )


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _halves(path: Path) -> tuple[tuple[float, float], tuple[float, float]]:
    """(first HALF_SECONDS, last HALF_SECONDS) of a recording, in seconds."""
    duration = describe_wav(path)["duration_seconds"]
    if duration < 2 * HALF_SECONDS:
        raise ValueError(f"{path}: {duration:.2f} s is shorter than two {HALF_SECONDS:g} s halves")
    return (0.0, HALF_SECONDS), (duration - HALF_SECONDS, duration)


def _prepare_set_dir(work: Path, set_name: str) -> Path:
    folder = work / set_name
    if folder.exists():
        if not (folder / MARKER).is_file() and any(folder.iterdir()):
            raise FileExistsError(
                f"{folder}: exists and was not written by benchmarks/real_sets.py; choose another work folder"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("written by benchmarks/real_sets.py; replaced on the next run\n")
    return folder


# ------------------------------------------------------------------------------------------------
# The sets
# ------------------------------------------------------------------------------------------------
def _id00_normals(root: Path) -> list[_Source]:
    normals = _sources(root, ID00, lambda r: r["is_anomaly"].strip() == "0")
    if len(normals) != 75:
        logger.warning("%s: %d normal clips, expected 75", ID00, len(normals))
    return normals


def _real_fan(root: Path, work: Path) -> tuple[list[RealGroup], list[dict]]:
    w = _GroupWriter(work, "real-fan", "fan")
    for s in _id00_normals(root):
        w.add("train", s)
    tests = (
        _sources(root, BECODE, lambda r: r["machine_type"] == "fan")
        + _sources(root, MISC, lambda r: r["machine_type"] == "fan" and r["channels"].strip() == "1")
        + _sources(root, ID00, lambda r: r["is_anomaly"].strip() == "1")
    )
    for s in sorted(tests, key=lambda s: (s.label, s.name)):
        w.add("test", s)
    note = (
        "Fitted on the 75 id_00 normals of DCASE 2020 Task 2 (machine type not stated by the source; its mean "
        "spectrum matches MIMII fan id_00, r = 0.994). Every test normal is a MIMII fan of UNKNOWN machine id "
        "(and unknown SNR version), recorded apart from the training clips: part of what separates test clips "
        "from the training clips is the machine (or the recording), not the fault, and the test normals are "
        "themselves out of distribution. The MIMII normal/abnormal clips are from the same unknown fan(s), so "
        "the AUC mostly asks whether their abnormal clips lie farther from id_00 than their normal ones. Only "
        "1 anomaly (the id_00 test anomaly) is of the training machine. MIMII clips are channel 0 of the "
        "8-channel originals; DCASE 2020 used channel 0 (1-based ch1) too. 11 normal vs 12 anomalous clips: "
        "AUC in steps of 1/132."
    )
    return [w.group(note)], w.rows


def _dev_sources(root: Path, machine_type: str) -> tuple[list[_Source], list[_Source]]:
    rows = _sources(root, DEV, lambda r: r["machine_type"] == machine_type)
    normals = [s for s in rows if s.label == "normal"]
    anomalies = [s for s in rows if s.label == "anomaly"]
    if not normals or not anomalies:
        raise FileNotFoundError(f"{DEV}: no normal or no anomalous {machine_type} clips")
    return normals, anomalies


def _real_dcase2020_dev(root: Path, work: Path) -> tuple[list[RealGroup], list[dict]]:
    groups, rows = [], []
    for machine_type in DEV_TYPES:
        normals, anomalies = _dev_sources(root, machine_type)
        w = _GroupWriter(work, "real-dcase2020-dev", machine_type)
        for s in normals:
            w.add("train", s, _halves(s.path)[0])
        for s in normals + anomalies:
            w.add("test", s, _halves(s.path)[1])
        machine_id = normals[0].name.split("_id_")[1][:2] if "_id_" in normals[0].name else "?"
        n_n, n_a = len(normals), len(anomalies)
        note = (
            f"DCASE 2020 Task 2 dev {machine_type} id_{machine_id}: TINY. {n_n} normal + {n_a} anomalous clips, "
            f"no training clips: trained on the first {HALF_SECONDS:g} s of the {n_n} normal clips "
            f"({n_n * HALF_SECONDS:g} s of audio), tested on the last {HALF_SECONDS:g} s of all {n_n + n_a}. "
            f"AUC in steps of 1/{n_n * n_a}. Each test normal is the continuation of a training clip (same "
            "recording, a few seconds later), which flatters the normals; an anomaly heard only in a clip's "
            "first half is missed by construction."
        )
        groups.append(w.group(note))
        rows += w.rows
    return groups, rows


def _dcase2023_sources(root: Path) -> dict[str, dict[str, list[_Source]]]:
    by_type: dict[str, dict[str, list[_Source]]] = defaultdict(lambda: {"train": [], "test": []})
    folder = root / DCASE2023
    with open(folder / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            name = row["file"]
            split = "train" if "_train_" in name else "test" if "_test_" in name else None
            if split is None:
                raise ValueError(f"{DCASE2023}/manifest.csv: {name} is neither a train nor a test clip")
            by_type[row["machine_type"]][split].append(
                _Source(folder / name, f"{DCASE2023}/{name}", "anomaly" if row["label"] == "anomaly" else "normal")
            )
    for parts in by_type.values():
        for split in parts:
            parts[split].sort(key=lambda s: (s.label, s.name))
    return dict(sorted(by_type.items()))


def _real_dcase2023(root: Path, work: Path) -> tuple[list[RealGroup], list[dict]]:
    by_type = _dcase2023_sources(root)
    usable = [
        t
        for t, p in by_type.items()
        if {s.label for s in p["test"]} == {"normal", "anomaly"}
        and p["train"]
        and all(s.label == "normal" for s in p["train"])
    ]
    omitted = [t for t in by_type if t not in usable]
    if omitted:
        logger.info(
            "real-dcase2023: omitted %s (their test clips are not one normal and one anomaly)", ", ".join(omitted)
        )
    groups, rows = [], []
    for machine_type in usable:
        parts = by_type[machine_type]
        w = _GroupWriter(work, "real-dcase2023", machine_type)
        for s in parts["train"]:
            w.add("train", s)
        domains = []
        for s in parts["test"]:
            w.add("test", s)
            domain = "source" if "_source_" in s.name else "target" if "_target_" in s.name else "?"
            domains.append(f"{s.label} = {domain} domain")
        note = (
            f"DCASE 2023 Task 2 dev samples, {machine_type} section 00: trained on {len(parts['train'])} source-"
            f"domain normal clips only; tested on {len(parts['test'])} clips ({', '.join(domains)}). One "
            "normal vs one anomaly: the AUC is 0, 0.5 or 1, an end-to-end check rather than a measurement; a "
            "target-domain test clip differs from training by its operating condition as well. "
            f"Omitted types: {', '.join(omitted) or 'none'} (no anomalous or no normal test clip)."
        )
        groups.append(w.group(note))
        rows += w.rows
    return groups, rows


def _injected_rows(work: Path, set_name: str) -> list[dict]:
    with open(work / set_name / "manifest.csv", newline="") as f:
        return [
            {
                "path": f"{set_name}/{row['path']}",
                "set": set_name,
                "machine_type": row["machine_type"],
                "split": row["split"],
                "label": row["label"],
                "fault": row["fault"],
                "level": row["level"],
                "source": row["source"],
            }
            for row in csv.DictReader(f)
        ]


def _count(rows: Iterable[dict], machine_type: str) -> tuple[int, int, int]:
    rows = [r for r in rows if r["machine_type"] == machine_type]
    return (
        sum(r["split"] == "train" for r in rows),
        sum(r["split"] == "test" and r["label"] == "normal" for r in rows),
        sum(r["split"] == "test" and r["label"] == "anomaly" for r in rows),
    )


def _injected_note(n_pairs: int, per_pair: int, n_test_normal: int) -> str:
    return (
        f"{n_pairs} (kind, level) pairs x {per_pair} held-out clips each; per pair {n_test_normal} normal vs "
        f"{per_pair} anomalous clips (AUC in steps of 1/{n_test_normal * per_pair}). The faults are generic "
        "(benchmarks/fault_injection.py), not recorded failures: they say how faint a symptom of each kind "
        "is still found, not how real faults of this machine look. Pooled AUC over all pairs depends on "
        "the chosen grids; report it per kind and level. All levels of a kind share the same base clips and "
        "random parameters, so as the level falls a cell's AUC tends to the AUC of its untouched base clips "
        "against all test normals (not exactly 0.5 when a pair uses only some held-out clips): compare with "
        "that floor (injections.jsonl names each anomaly's base clip, held_out_normal)."
    )


def _injected_fan(root: Path, work: Path, seed: int, kinds, levels) -> tuple[list[RealGroup], list[dict]]:
    normals = _id00_normals(root)
    machine_dir = make_injected_dataset(
        [s.path for s in normals],
        work / "injected-fan",
        "fan",
        INJECTED_FAN_TRAIN,
        kinds,
        levels,
        seed,
        clips_per_pair=INJECTED_FAN_CLIPS_PER_PAIR,
        sources=[s.name for s in normals],
    )
    rows = _injected_rows(work, "injected-fan")
    n_train, n_normal, n_anomaly = _count(rows, "fan")
    n_pairs = len({(r["fault"], r["level"]) for r in rows if r["label"] == "anomaly"})
    note = (
        f"The 75 id_00 normals (DCASE 2020 Task 2, almost surely the fan) sorted by name: the first "
        f"{n_train} train, the other {n_normal} are the test normals (untouched) and the base of the injected "
        f"anomalies; one machine, one recording session, so train and test differ only by the fault. "
        + _injected_note(n_pairs, INJECTED_FAN_CLIPS_PER_PAIR, n_normal)
    )
    return [RealGroup("injected-fan", "fan", machine_dir, n_train, n_normal, n_anomaly, note)], rows


def _injected_dcase2020(root: Path, work: Path, seed: int, kinds, levels) -> tuple[list[RealGroup], list[dict]]:
    set_dir = work / "injected-dcase2020"
    groups = []
    for machine_type in DEV_TYPES:
        normals, _ = _dev_sources(root, machine_type)
        seg_dir = set_dir / "_segments" / machine_type  # '_' folders are skipped by training.datasets
        seg_dir.mkdir(parents=True)
        paths, names = [], []
        for half in (0, 1):  # all first halves (train) before all last halves (held out)
            for i, s in enumerate(normals):
                span = _halves(s.path)[half]
                x, fmt = _load_segment(s.path, *span)
                path = seg_dir / f"{'first' if half == 0 else 'last'}_{i:02d}.wav"
                write_wav(path, x, SAMPLE_RATE_HZ, fmt)
                paths.append(path)
                names.append(f"{s.name}#t={span[0]:g},{span[1]:g}")
        make_injected_dataset(paths, set_dir, machine_type, len(normals), kinds, levels, seed, sources=names)
    rows = _injected_rows(work, "injected-dcase2020")
    for machine_type in DEV_TYPES:
        n_train, n_normal, n_anomaly = _count(rows, machine_type)
        n_pairs = len(
            {(r["fault"], r["level"]) for r in rows if r["label"] == "anomaly" and r["machine_type"] == machine_type}
        )
        note = (
            f"DCASE 2020 Task 2 dev {machine_type}: TINY. Trained on the first {HALF_SECONDS:g} s of its "
            f"{n_train} normal clips; the last {HALF_SECONDS:g} s of the same clips are the {n_normal} test "
            f"normals and the base of the injected anomalies (each test normal is the continuation of a "
            f"training clip, which flatters the normals). " + _injected_note(n_pairs, n_normal, n_normal)
        )
        groups.append(
            RealGroup("injected-dcase2020", machine_type, set_dir / machine_type, n_train, n_normal, n_anomaly, note)
        )
    return groups, rows


def build_real_sets(
    shared_dir: Path,
    work_dir: Path,
    seed: int = 0,
    *,
    sets: Sequence[str] | None = None,
    kinds: Sequence[str] = FAULT_KINDS,
    levels: dict[str, Sequence[float]] | None = None,
) -> tuple[list[RealGroup], Path]:
    """Materialize the real-recording evaluation sets under work_dir.

    Args:
        shared_dir: the ../shared folder (with data/real and data/dcase2023_samples) or its data/ folder.
        work_dir: where the sets go (WORK/<set>/<machine_type>/{train,test}); never inside the repository.
            A set folder written before by this function is replaced; any other existing one is an error.
        seed: the fault injection seed (the real sets do not depend on it).
        sets: the set names to build (default: all of SET_NAMES).
        kinds, levels: fault kinds and level grids of the injected sets (default: all, at
            fault_injection.LEVELS).

    Returns:
        (the groups, one per machine folder, in SET_NAMES order; WORK/manifest.csv). The manifest keeps
        the rows of sets built before and not rebuilt now, as long as their folder still exists.
    """
    work = Path(work_dir).resolve()
    if work == REPO or REPO in work.parents:
        raise ValueError(f"{work}: inside the repository; the audio must not go there (give a folder elsewhere)")
    root = data_root(shared_dir)
    chosen = tuple(SET_NAMES if sets is None else sets)
    unknown = [s for s in chosen if s not in SET_NAMES]
    if unknown:
        raise ValueError(f"unknown set(s) {unknown}; choose from: {', '.join(SET_NAMES)}")
    work.mkdir(parents=True, exist_ok=True)
    groups: list[RealGroup] = []
    rows: list[dict] = []
    for set_name in SET_NAMES:
        if set_name not in chosen:
            continue
        _prepare_set_dir(work, set_name)
        if set_name == "real-fan":
            g, r = _real_fan(root, work)
        elif set_name == "real-dcase2020-dev":
            g, r = _real_dcase2020_dev(root, work)
        elif set_name == "real-dcase2023":
            g, r = _real_dcase2023(root, work)
        elif set_name == "injected-fan":
            g, r = _injected_fan(root, work, seed, kinds, levels)
        else:
            g, r = _injected_dcase2020(root, work, seed, kinds, levels)
        groups += g
        rows += r
        logger.info(
            "%s: %s",
            set_name,
            ", ".join(f"{x.machine_type} {x.n_train}/{x.n_test_normal}/{x.n_test_anomaly}" for x in g),
        )

    manifest = work / "manifest.csv"
    kept: list[dict] = []
    if manifest.is_file():
        with open(manifest, newline="") as f:
            kept = [
                row for row in csv.DictReader(f) if row["set"] not in chosen and (work / row["set"] / MARKER).is_file()
            ]
    tmp = manifest.with_name(manifest.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(kept, key=lambda r: r["path"]) + rows)
    os.replace(tmp, manifest)
    return groups, manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="work folder for the sets (outside the repository)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared folder (default: ../shared)")
    parser.add_argument("--seed", type=int, default=0, help="fault injection seed (default: 0)")
    parser.add_argument("--sets", nargs="+", choices=SET_NAMES, help="build only these sets (default: all)")
    parser.add_argument("--notes", action="store_true", help="print every group's note")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    groups, manifest = build_real_sets(Path(args.shared), Path(args.work), args.seed, sets=args.sets)
    print(f"{'set':<20} {'machine_type':<12} {'train':>5} {'test_n':>6} {'test_a':>6}  data_dir")
    for g in groups:
        print(
            f"{g.set_name:<20} {g.machine_type:<12} {g.n_train:>5} {g.n_test_normal:>6} {g.n_test_anomaly:>6}  "
            f"{g.data_dir}"
        )
        if args.notes:
            print(f"    {g.note}")
    print(f"manifest: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
