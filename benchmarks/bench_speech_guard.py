"""The speech guard (device/analysis/speech.py) on real speech mixed into real machines, and on pure machines.

Usage: python benchmarks/bench_speech_guard.py [--shared ../shared] [--threshold 0.5] [--clips-per-type 3]
       [--espeak] [--markdown] [--dump FILE.csv]

Speech: the voice of Debian's alsa-utils (/usr/share/sounds/alsa/*.wav, 8 words of one man: "Front Center"...;
Noise.wav is not speech), the 3 UrbanSound8K "children_playing" clips (voices in a playground), and with
--espeak sentences from espeak-ng (a formant synthesizer: synthetic, reported on their own row).
Machines: every real recording in ../shared/data/real and ../shared/data/dcase2023_samples (see their
README.md), by machine type; UrbanSound8K's machine-like classes (air_conditioner, drilling, engine_idling,
jackhammer) and its other sounds (car_horn, dog_bark, gun_shot, siren, street_music) as further
non-speech.

Split: the threshold and the detector's constants were chosen on the DEV part only: the alsa words
Front_Center, Front_Left, Front_Right, Rear_Center mixed into the DEV machine types (fan, ToyCar, slider,
bearing, air_conditioner, jackhammer). The TEST part, reported separately, is the other four alsa words
(Rear_Left, Rear_Right, Side_Left, Side_Right), the children_playing clips and espeak-ng, mixed into the
other machine types (pump, valve, ToyConveyor, ToyTrain, gearbox, drilling, engine_idling); the false
detections are counted on every clip of every type, each labelled dev or test.

Mixing: a 10 s machine clip (16 kHz) and one speech file placed at 3 s; SNR = the speech's active
level (mean power over its frames within 30 dB of its loudest, 20 ms frames) against the machine's
mean power over the whole clip, at 0, -6, -12, -18 dB. The guard sees the whole 10 s clip, as it sees
an evidence clip. Speed: milliseconds of one core per second of audio, on this machine.
A benchmark, not a test: the recordings are for research and testing only and are not in the repository.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.analysis.speech import DEFAULT_THRESHOLD, analyse_clip
from device.audio.audio_io import read_wav, to_mono
from device.audio.resample import resample

RATE_HZ = 16000
CLIP_SECONDS = 10.0
SPEECH_AT_SECONDS = 3.0
SNRS_DB = (0, -6, -12, -18)
ALSA = Path("/usr/share/sounds/alsa")
ALSA_DEV = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center")
ALSA_TEST = ("Rear_Left", "Rear_Right", "Side_Left", "Side_Right")
DEV_TYPES = {"fan", "ToyCar", "slider", "bearing", "air_conditioner", "jackhammer"}
ESPEAK_LINES = (
    ("en", "The pump on line two is running hot again, can you check the bearing?"),
    ("en+f3", "I will be back after lunch, leave the valve closed until then."),
    ("de", "Die Maschine macht heute wieder komische Geraeusche, ruf bitte den Service an."),
    ("fr+m3", "Nous avons change le filtre hier soir et le bruit a diminue."),
    ("es+f2", "Manana cambiamos la correa del ventilador numero tres."),
)


def load(path: Path) -> np.ndarray:
    samples, rate = read_wav(path)
    mono = to_mono(samples).astype(np.float64)
    return resample(mono, rate, RATE_HZ) if rate != RATE_HZ else mono


def machine_clips(shared: Path) -> list[tuple[str, str, Path]]:
    """(machine type, split, path) of every real non-speech recording."""
    out = []
    real = shared / "data" / "real"
    for folder in ("dcase2020t2_id00_zyy438", "dcase2020t2_demo_cromerow", "mimii_becode_demo_arlene", "mimii_misc"):
        with open(real / folder / "manifest.csv") as f:
            for row in csv.DictReader(f):
                if row["channels"] != "1":
                    continue
                kind = "fan" if row["machine_type"].startswith("unknown") else row["machine_type"]
                out.append((kind, row["path"]))
    with open(real / "urbansound8k_subset" / "manifest.csv") as f:
        for row in csv.DictReader(f):
            if row["label"] != "children_playing":
                out.append((row["label"], row["path"]))
    rows = [(kind, "dev" if kind in DEV_TYPES else "test", real.parent / "real" / p) for kind, p in out]
    with open(shared / "data" / "dcase2023_samples" / "manifest.csv") as f:
        for row in csv.DictReader(f):
            kind = row["machine_type"]
            rows.append(
                (kind, "dev" if kind in DEV_TYPES else "test", shared / "data" / "dcase2023_samples" / row["file"])
            )
    return rows


def speech_sources(shared: Path, espeak: bool) -> list[tuple[str, str, np.ndarray]]:
    """(source name, split, 16 kHz samples) of every speech recording."""
    out = [(f"alsa:{n}", "dev", load(ALSA / f"{n}.wav")) for n in ALSA_DEV]
    out += [(f"alsa:{n}", "test", load(ALSA / f"{n}.wav")) for n in ALSA_TEST]
    us8k = shared / "data" / "real" / "urbansound8k_subset"
    with open(us8k / "manifest.csv") as f:
        for row in csv.DictReader(f):
            if row["label"] == "children_playing":
                out.append((f"children:{Path(row['path']).stem}", "test", load(shared / "data" / "real" / row["path"])))
    if espeak:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise SystemExit("error: --espeak needs espeak-ng (apt-get install espeak-ng)")
        with tempfile.TemporaryDirectory() as tmp:
            for i, (voice, text) in enumerate(ESPEAK_LINES):
                wav = Path(tmp) / f"{i}.wav"
                subprocess.run([exe, "-v", voice, "-w", str(wav), text], check=True)
                out.append((f"espeak:{voice}", "test", load(wav)))
    return out


def active_power(speech: np.ndarray) -> float:
    """Mean power over the 20 ms frames within 30 dB of the loudest (an active speech level)."""
    n = 320
    frames = speech[: len(speech) // n * n].reshape(-1, n)
    p = (frames**2).mean(axis=1)
    return float(p[p >= p.max() * 1e-3].mean())


def fit_clip(x: np.ndarray) -> np.ndarray:
    n = int(CLIP_SECONDS * RATE_HZ)
    if len(x) >= n:
        return x[:n]
    return np.resize(x, n)  # a shorter clip (US8K's 4 s) repeated, as their source already did


def mix(machine: np.ndarray, speech: np.ndarray, snr_db: float) -> np.ndarray:
    speech = speech[: int((CLIP_SECONDS - SPEECH_AT_SECONDS) * RATE_HZ)]
    gain = np.sqrt(np.mean(machine**2) * 10 ** (snr_db / 10) / active_power(speech))
    out = machine.copy()
    start = int(SPEECH_AT_SECONDS * RATE_HZ)
    out[start : start + len(speech)] += gain * speech
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--clips-per-type", type=int, default=3, help="machine clips per type that speech is mixed into")
    ap.add_argument("--espeak", action="store_true", help="add espeak-ng sentences (synthetic speech)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--dump", type=Path, help="write every clip's features to this CSV")
    args = ap.parse_args(argv)
    if not (args.shared / "data" / "real").is_dir() or not ALSA.is_dir():
        print(f"error: needs {args.shared}/data/real and {ALSA} (apt-get install alsa-utils)", file=sys.stderr)
        return 1
    machines = machine_clips(args.shared)
    speech = speech_sources(args.shared, args.espeak)
    dump: list[dict] = []
    cpu = 0.0
    audio_seconds = 0.0

    def judge(x: np.ndarray, **row) -> bool:
        nonlocal cpu, audio_seconds
        t0 = time.process_time()
        v = analyse_clip(x, RATE_HZ, args.threshold)
        cpu += time.process_time() - t0
        audio_seconds += len(x) / RATE_HZ
        dump.append(
            {
                **row,
                "p": round(v.probability, 4),
                "score": round(v.score, 3),
                "at": v.at_seconds,
            }
        )
        return v.speech

    # False detections: every machine clip, whole.
    false_by_type: dict[tuple[str, str], list[bool]] = {}
    clips_by_type: dict[str, list[np.ndarray]] = {}
    for i, (kind, split, path) in enumerate(machines):
        print(f"\rmachines {i + 1}/{len(machines)}", end="", file=sys.stderr)
        x = fit_clip(load(path))
        false_by_type.setdefault((kind, split), []).append(judge(x, kind=kind, split=split, speech="", snr=""))
        clips_by_type.setdefault(kind, [])
        if len(clips_by_type[kind]) < args.clips_per_type:
            clips_by_type[kind].append(x)
    print(file=sys.stderr)
    # Detections: speech of a split into the machines of the same split.
    hits: dict[tuple[str, str, int], list[bool]] = {}
    non_speech = {"car_horn", "dog_bark", "gun_shot", "siren", "street_music"}
    for j, (name, split, s) in enumerate(speech):
        print(f"\rspeech {j + 1}/{len(speech)}", end="", file=sys.stderr)
        group = name.split(":")[0]
        for kind, split_kind in sorted({(k, sp) for k, sp, _ in machines}):
            if split_kind != split or kind in non_speech:
                continue
            for x in clips_by_type[kind]:
                for snr in SNRS_DB:
                    hit = judge(mix(x, s, snr), kind=kind, split=split, speech=name, snr=snr)
                    hits.setdefault((group, split, snr), []).append(hit)
    print(file=sys.stderr)
    if args.dump:
        with open(args.dump, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dump[0]))
            w.writeheader()
            w.writerows(dump)
    print(f"threshold {args.threshold}; speed {1000 * cpu / audio_seconds:.2f} ms of CPU per second of audio")
    print("\n| speech | split | " + " | ".join(f"{s} dB" for s in SNRS_DB) + " |")
    print("|---|---|" + "---|" * len(SNRS_DB))
    for group, split in sorted({(g, sp) for g, sp, _ in hits}, key=lambda t: (t[1], t[0])):
        cells = []
        for snr in SNRS_DB:
            h = hits[(group, split, snr)]
            cells.append(f"{100 * np.mean(h):.0f} % ({sum(h)}/{len(h)})")
        print(f"| {group} | {split} | " + " | ".join(cells) + " |")
    print("\n| machine (no speech) | split | clips | detected as speech |")
    print("|---|---|---|---|")
    for (kind, split), v in sorted(false_by_type.items(), key=lambda t: (t[0][1], t[0][0])):
        print(f"| {kind} | {split} | {len(v)} | {sum(v)} ({100 * np.mean(v):.0f} %) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
