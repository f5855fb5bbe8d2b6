"""`python -m training stats DIR`: format, level, clipping and DC offset of every WAV under a folder."""

from __future__ import annotations

import argparse
import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.audio.audio_io import MAX_SAMPLE_MAGNITUDE, WavReader
from device.audio.sources import WAV_SUFFIXES
from device.errors import AcmonError

logger = logging.getLogger(__name__)

STATS_CSV = "stats.csv"
DEFAULT_OUT_SUBDIR = "_stats"
HISTOGRAMS = {
    "duration_seconds": ("duration_hist.png", "duration (s)"),
    "rms_dbfs": ("rms_dbfs_hist.png", "RMS level (dBFS)"),
    "clipping_fraction": ("clipping_hist.png", "clipped samples (%)"),
}

# Frames decoded per read, so a file of any length is analysed in bounded memory.
BLOCK_FRAMES = 1 << 16

# Full-scale step of float files for the clipping test: a 16-bit LSB (floats have no LSB of their own).
FLOAT_CLIP_LSB = 1.0 / 32768.0

# A file is called out in the summary above these.
CLIPPING_WARN_FRACTION = 1e-3
DC_WARN = 0.01


@dataclass
class FileStats:
    """Format and level statistics of one WAV file (error set and the rest empty if it is unreadable).

    Attributes:
        path: The file, relative to the scanned folder.
        channels: Number of channels.
        sample_format: "pcm_u8", "pcm_s16", "pcm_s24", "pcm_s32", "float32" or "float64".
        bits_per_sample: Container size of one sample, in bits.
        sample_rate_hz: Sample rate in hertz.
        n_frames: Sample frames (one sample per channel).
        duration_seconds: Length in seconds.
        rms_dbfs: RMS level of all samples of all channels, dB re full scale (-inf for digital silence).
        peak_dbfs: Largest absolute sample, dB re full scale.
        clipping_fraction: Fraction (0..1) of samples at or within 1 LSB of full scale (positive or
            negative); for float files the LSB is a 16-bit one (1/32768) and anything beyond
            full scale counts.
        dc_offset: Mean of the channel whose mean is largest in magnitude, in full-scale units (signed).
        damaged_samples: Samples that are NaN, infinite or absurdly large (float files only); the
            levels above are of the other samples. A file with any is skipped by `fit`.
        error: Why the file could not be read; "" if it was read.
    """

    path: str
    channels: int | None = None
    sample_format: str = ""
    bits_per_sample: int | None = None
    sample_rate_hz: int | None = None
    n_frames: int | None = None
    duration_seconds: float | None = None
    rms_dbfs: float | None = None
    peak_dbfs: float | None = None
    clipping_fraction: float | None = None
    dc_offset: float | None = None
    damaged_samples: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


CSV_COLUMNS = tuple(f.name for f in fields(FileStats))


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else float("-inf")


def _clip_thresholds(sample_format: str, bits_per_sample: int) -> tuple[float, float]:
    """(high, low): a sample >= high or <= low is at or within 1 LSB of full scale."""
    if sample_format.startswith("float"):
        return 1.0 - FLOAT_CLIP_LSB, -1.0 + FLOAT_CLIP_LSB
    lsb = 2.0 ** -(bits_per_sample - 1)
    # Integer full scale is asymmetric: the largest code is 1 - LSB, the smallest -1.
    return 1.0 - 2.0 * lsb, -1.0 + lsb


def file_stats(path: str | Path, name: str | None = None, block_frames: int = BLOCK_FRAMES) -> FileStats:
    """Statistics of one WAV file, read block by block.

    Args:
        path: The WAV file.
        name: How to show the file (default: path as given).
        block_frames: Frames decoded per read.

    Returns:
        FileStats with every field set.

    Raises:
        AcmonError: the file cannot be read (not a WAV, unsupported format, I/O error).
    """
    with WavReader(path) as reader:
        channels = reader.channels
        high, low = _clip_thresholds(reader.sample_format, reader.bits_per_sample)
        sum_squares = 0.0
        sums = np.zeros(channels, dtype=np.float64)
        peak = 0.0
        clipped = 0
        n = 0
        while True:
            block = reader.read(block_frames)
            if block.shape[0] == 0:
                break
            x = block.astype(np.float64)
            if reader.nonfinite_samples:  # levels of the samples that are sound; the damaged ones are counted
                x = np.where(np.abs(x) <= MAX_SAMPLE_MAGNITUDE, x, 0.0)
            sum_squares += float(np.sum(x * x))
            sums += x.sum(axis=0)
            peak = max(peak, float(np.max(np.abs(x))))
            clipped += int(np.count_nonzero((x >= high) | (x <= low)))
            n += x.shape[0]
        n_samples = n * channels
        means = sums / n if n else sums
        dc = float(means[int(np.argmax(np.abs(means)))]) if n else 0.0
        return FileStats(
            path=name if name is not None else str(path),
            channels=channels,
            sample_format=reader.sample_format,
            bits_per_sample=reader.bits_per_sample,
            sample_rate_hz=reader.sample_rate_hz,
            n_frames=n,
            duration_seconds=n / reader.sample_rate_hz,
            rms_dbfs=_db(math.sqrt(sum_squares / n_samples)) if n_samples else float("-inf"),
            peak_dbfs=_db(peak),
            clipping_fraction=clipped / n_samples if n_samples else 0.0,
            dc_offset=dc,
            damaged_samples=reader.nonfinite_samples,
        )


def find_wavs(root: str | Path) -> list[Path]:
    """Every .wav/.wave file under root, recursively, sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in WAV_SUFFIXES and p.is_file())


def collect_stats(root: str | Path, progress: bool = True) -> list[FileStats]:
    """Statistics of every WAV under root; an unreadable file gets its error and does not stop the run.

    Raises:
        AcmonError: root is not a folder or holds no WAV file.
    """
    root = Path(root)
    if not root.is_dir():
        raise AcmonError(f"{root}: no such folder; give the folder of recordings to analyse")
    paths = find_wavs(root)
    if not paths:
        raise AcmonError(f"{root}: no .wav files found (searched recursively)")
    results = []
    for path in tqdm(paths, desc="stats", unit="file", disable=not progress):
        name = path.relative_to(root).as_posix()
        try:
            results.append(file_stats(path, name))
        except (AcmonError, OSError) as exc:
            logger.warning("unreadable: %s", exc)
            results.append(FileStats(path=name, error=str(exc).replace("\n", " ")))
    return results


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
TABLE_COLUMNS = (
    # (header, FileStats attribute, format, right-aligned)
    ("file", "path", "{}", False),
    ("ch", "channels", "{}", True),
    ("format", "sample_format", "{}", False),
    ("rate_hz", "sample_rate_hz", "{}", True),
    ("duration_s", "duration_seconds", "{:.2f}", True),
    ("rms_dbfs", "rms_dbfs", "{:.1f}", True),
    ("peak_dbfs", "peak_dbfs", "{:.1f}", True),
    ("clip_%", "clipping_fraction", "{:.3f}", True),
    ("dc", "dc_offset", "{:+.1e}", True),
    ("damaged", "damaged_samples", "{}", True),
)


def _cell(stats: FileStats, attribute: str, fmt: str) -> str:
    value = getattr(stats, attribute)
    if value is None or value == "":
        return "-"
    if attribute == "clipping_fraction":
        value = 100.0 * value
    if isinstance(value, float) and math.isinf(value):
        return "-inf" if value < 0 else "inf"
    return fmt.format(value)


def format_table(stats: Sequence[FileStats]) -> str:
    """A column-aligned table, one line per file; unreadable files show their error in the last column."""
    rows = [[header for header, _, _, _ in TABLE_COLUMNS] + ["error"]]
    for s in stats:
        rows.append([_cell(s, attribute, fmt) for _, attribute, fmt, _ in TABLE_COLUMNS] + [s.error])
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if right else cell.ljust(w) for cell, w, (_, _, _, right) in zip(row, widths, TABLE_COLUMNS)
        ]
        lines.append(("  ".join(cells) + ("  " + row[-1] if row[-1] else "")).rstrip())
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def summarize(stats: Sequence[FileStats]) -> str:
    """Counts, total duration, rates and formats seen, files to look at, and unreadable files by name."""
    good = [s for s in stats if s.ok]
    bad = [s for s in stats if not s.ok]
    total = sum(s.duration_seconds or 0.0 for s in good)

    def tally(values: list) -> str:
        counts: dict = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: str(kv[0])))

    lines = [
        f"files: {len(stats)} ({len(good)} readable, {len(bad)} unreadable)",
        f"total duration: {_hms(total)} ({total:.1f} s)",
    ]
    if good:
        durations = [s.duration_seconds for s in good if s.duration_seconds is not None]
        lines.append(f"durations: {min(durations):.2f} to {max(durations):.2f} s")
        lines.append("sample rates: " + tally([f"{s.sample_rate_hz} Hz" for s in good]))
        lines.append("formats: " + tally([f"{s.sample_format} {s.channels} ch" for s in good]))
        rms = [s.rms_dbfs for s in good if s.rms_dbfs is not None and math.isfinite(s.rms_dbfs)]
        if rms:
            lines.append(f"RMS level: {min(rms):.1f} to {max(rms):.1f} dBFS (median {float(np.median(rms)):.1f})")
        clipped = [s.path for s in good if (s.clipping_fraction or 0.0) > CLIPPING_WARN_FRACTION]
        if clipped:
            lines.append(
                f"clipping above {100 * CLIPPING_WARN_FRACTION:g} % of samples: {len(clipped)} file(s), e.g. "
                + ", ".join(clipped[:3])
            )
        dc = [s.path for s in good if abs(s.dc_offset or 0.0) > DC_WARN]
        if dc:
            lines.append(f"DC offset above {DC_WARN:g} of full scale: {len(dc)} file(s), e.g. " + ", ".join(dc[:3]))
        damaged = [s.path for s in good if s.damaged_samples]
        if damaged:
            lines.append(
                f"NaN, infinite or absurd samples (fit skips these files): {len(damaged)} file(s), e.g. "
                + ", ".join(damaged[:3])
            )
        silent = [s.path for s in good if s.rms_dbfs is not None and not math.isfinite(s.rms_dbfs)]
        if silent:
            lines.append(f"digital silence: {len(silent)} file(s), e.g. " + ", ".join(silent[:3]))
    if bad:
        lines.append(f"unreadable: {len(bad)} file(s)")
        lines.extend(f"  {s.path}: {s.error}" for s in bad)
    return "\n".join(lines)


def write_csv(stats: Sequence[FileStats], path: str | Path) -> Path:
    """One row per file with CSV_COLUMNS; unknown values are empty, silence is -inf."""
    path = Path(path)
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for s in stats:
                writer.writerow({k: ("" if v is None else v) for k, v in asdict(s).items()})
    except OSError as e:
        raise AcmonError(f"{path}: cannot write: {e.strerror or e}; check that the folder is writable") from None
    return path


def write_histograms(stats: Sequence[FileStats], out_dir: str | Path) -> list[Path]:
    """Histograms of duration, RMS dBFS and clipping of the readable files, as PNGs (Agg, no display needed).

    Returns:
        The PNG paths, in HISTOGRAMS order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (slow import, only here)
    from matplotlib.figure import Figure  # noqa: PLC0415

    out_dir = Path(out_dir)
    good = [s for s in stats if s.ok]
    written = []
    for attribute, (file_name, xlabel) in HISTOGRAMS.items():
        values = np.array([getattr(s, attribute) for s in good], dtype=np.float64)
        if attribute == "clipping_fraction":
            values = 100.0 * values
        values = values[np.isfinite(values)]
        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if values.size:
            ax.hist(values, bins=min(30, max(5, int(np.sqrt(values.size)) * 2)), color="tab:blue", edgecolor="white")
        else:
            ax.text(0.5, 0.5, "no readable files", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("files")
        ax.set_title(f"{xlabel}: {values.size} file(s)")
        fig.tight_layout()
        target = out_dir / file_name
        try:
            fig.savefig(target, format="png")
        except OSError as e:
            raise AcmonError(f"{target}: cannot write: {e.strerror or e}; check that the folder is writable") from None
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def register(subparsers) -> argparse.ArgumentParser:
    """Add the `stats` subcommand; it runs run_stats(args)."""
    parser = subparsers.add_parser(
        "stats",
        help="format, duration, level (dBFS), clipping and DC offset of every WAV under a folder",
        description=(
            "Read every .wav under DIR (recursively, block by block) and report per file: channels, sample "
            "format, sample rate (Hz), duration (s), RMS and peak level (dBFS), clipping (percentage of samples "
            "at or within 1 LSB of full scale) and DC offset (full-scale units). Prints a table and a summary, "
            f"and writes {STATS_CSV} and histograms (duration, RMS dBFS, clipping) as PNG to the output folder. "
            "Unreadable files are listed with their error and do not stop the run."
        ),
    )
    parser.add_argument("dir", metavar="DIR", help="folder of recordings, searched recursively")
    parser.add_argument(
        "--out",
        metavar="OUT_DIR",
        default=None,
        help=f"folder for {STATS_CSV} and the PNGs (created if missing; default: DIR/{DEFAULT_OUT_SUBDIR})",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar on stderr")
    parser.set_defaults(func=run_stats)
    return parser


def run_stats(args: argparse.Namespace) -> int:
    """Run the `stats` subcommand: print the table and summary, write the CSV and PNGs; returns 0.

    Raises:
        AcmonError: DIR is missing or holds no WAV, or the output folder cannot be written.
    """
    root = Path(args.dir)
    out_dir = Path(args.out) if args.out else root / DEFAULT_OUT_SUBDIR
    stats = collect_stats(root, progress=not getattr(args, "no_progress", False))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AcmonError(
            f"{out_dir}: cannot create the output folder: {e.strerror or e}; choose another --out"
        ) from None
    csv_path = write_csv(stats, out_dir / STATS_CSV)
    pngs = write_histograms(stats, out_dir)
    print(format_table(stats))
    print()
    print(summarize(stats))
    print(f"wrote {csv_path} and {', '.join(p.name for p in pngs)}")
    return 0
