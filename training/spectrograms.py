"""`python -m training spectrograms DIR OUT`: log-mel images of recordings, computed by the device front end."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.analysis.features import FeatureParams, hz_to_mel, mel_to_hz
from device.errors import AcmonError
from device.pipeline import logmel_image

from .datasets import ClipRecord, load_record
from .stats import find_wavs

logger = logging.getLogger(__name__)

DEFAULT_SECONDS = 10.0
FIGURE_SIZE_INCHES = (10.0, 4.0)
FIGURE_DPI = 100  # images are FIGURE_SIZE_INCHES * FIGURE_DPI pixels: 1000 x 400
DYNAMIC_RANGE_DB = 80.0  # colours span the loudest value down to this many dB below it
N_FREQUENCY_TICKS = 8


def mel_band_centres_hz(params: FeatureParams) -> np.ndarray:
    """Centre frequency of each mel band in Hz, shape (n_mels,)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(params.fmin_hz), hz_to_mel(params.fmax_hz), params.n_mels + 2))
    return edges[1:-1]


def save_spectrogram(logmel: np.ndarray, params: FeatureParams, title: str, target: str | Path) -> Path:
    """Draw a log-mel image (time in s across, mel-band centre frequency in Hz up, dB colour bar) to a PNG.

    Args:
        logmel: (n_frames_total, n_mels) dB values from logmel_image.
        title: Figure title (the file name).
        target: PNG path; its folder must exist.

    Returns:
        target as a Path. The image is FIGURE_SIZE_INCHES * FIGURE_DPI pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (slow import, only here)
    from matplotlib.figure import Figure  # noqa: PLC0415

    n_windows = logmel.shape[0] // params.n_frames
    seconds = n_windows * params.window_seconds
    fig = Figure(figsize=FIGURE_SIZE_INCHES, dpi=FIGURE_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = float(np.max(logmel))
    image = ax.imshow(
        logmel.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0.0, seconds, -0.5, params.n_mels - 0.5),
        vmin=vmax - DYNAMIC_RANGE_DB,
        vmax=vmax,
    )
    centres = mel_band_centres_hz(params)
    ticks = np.unique(np.linspace(0, params.n_mels - 1, min(N_FREQUENCY_TICKS, params.n_mels)).round().astype(int))
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{centres[i]:.0f}" for i in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band centre (Hz)")
    ax.set_title(title)
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label("mel band power (dB)")
    fig.tight_layout()
    target = Path(target)
    try:
        fig.savefig(target, format="png")
    except OSError as e:
        raise AcmonError(f"{target}: cannot write: {e.strerror or e}; check that the folder is writable") from None
    return target


def write_spectrograms(
    root: str | Path,
    out_dir: str | Path,
    params: FeatureParams | None = None,
    seconds: float | None = DEFAULT_SECONDS,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """One log-mel PNG per WAV under root, in a folder tree mirroring root's.

    Args:
        root: Folder of recordings, searched recursively.
        out_dir: Where OUT/<relative path>.png is written.
        params: Front-end parameters; FeatureParams() if None.
        seconds: Only the first this many seconds of each file; None or 0 for the whole file.
        limit: Stop after this many images (files in sorted path order; skipped files do not count); None
            for all.
        progress: Show a tqdm progress bar on stderr.

    Returns:
        (written PNGs, skipped files with the reason). A file that cannot be read or is shorter
        than one analysis window is logged, skipped and listed; it never ends the run.

    Raises:
        AcmonError: root is not a folder or holds no WAV file.
    """
    params = params or FeatureParams()
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise AcmonError(f"{root}: no such folder; give the folder of recordings to draw")
    paths = find_wavs(root)
    out_resolved = out_dir.resolve()
    paths = [p for p in paths if out_resolved not in p.resolve().parents]
    if not paths:
        raise AcmonError(f"{root}: no .wav files found (searched recursively)")
    written: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    with tqdm(total=len(paths), desc="spectrograms", unit="file", disable=not progress) as bar:
        for path in paths:
            if limit is not None and len(written) >= limit:
                break
            bar.update()
            rel = path.relative_to(root)
            record = ClipRecord(path, "normal", end_seconds=seconds if seconds else None)
            try:
                samples = load_record(record, params.sample_rate_hz)
            except AcmonError as exc:
                logger.warning("skipping %s", exc)
                skipped.append((path, str(exc)))
                continue
            logmel = logmel_image(samples, params)
            if logmel.shape[0] == 0:
                reason = f"{path}: shorter than one analysis window ({params.window_seconds:.2f} s); nothing to draw"
                logger.warning("skipping %s", reason)
                skipped.append((path, reason))
                continue
            target = out_dir / rel.with_suffix(".png")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise AcmonError(
                    f"{target.parent}: cannot create folder: {e.strerror or e}; choose another OUT"
                ) from None
            written.append(save_spectrogram(logmel, params, rel.as_posix(), target))
    return written, skipped


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `spectrograms` subcommand; it runs run_spectrograms(args)."""
    parser = subparsers.add_parser(
        "spectrograms",
        help="draw log-mel spectrogram PNGs of every WAV under a folder, with the device's front end",
        description=(
            "For every .wav under DIR (recursively) write OUT/<same relative path>.png: the log-mel "
            "spectrogram the device computes (default front-end parameters: 16 kHz, 64 mel bands, 50 Hz to "
            "8 kHz), time in seconds across, mel-band centre frequency in Hz up, colour in dB (log-mel power "
            "before normalization). Only whole 1.04 s analysis windows are drawn. "
            "Multichannel files are mixed down and other rates resampled to 16 kHz."
        ),
    )
    parser.add_argument("dir", metavar="DIR", help="folder of recordings, searched recursively")
    parser.add_argument("out", metavar="OUT", help="output folder for the PNGs (created if missing)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        metavar="N",
        help="draw the first N seconds of each file; 0 draws whole files (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="stop after N images, taking files in sorted path order (default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar on stderr")
    parser.set_defaults(func=run_spectrograms)
    return parser


def run_spectrograms(args: argparse.Namespace) -> int:
    """Run the `spectrograms` subcommand; prints one summary line and returns 0.

    Raises:
        AcmonError: a bad argument, DIR missing or without WAVs, or no image could be drawn.
    """
    if args.seconds < 0:
        raise AcmonError(f"--seconds: must be >= 0 (0 = whole file), got {args.seconds:g}")
    if args.limit is not None and args.limit < 1:
        raise AcmonError(f"--limit: must be >= 1, got {args.limit}")
    written, skipped = write_spectrograms(
        args.dir,
        args.out,
        seconds=args.seconds or None,
        limit=args.limit,
        progress=not getattr(args, "no_progress", False),
    )
    if not written:
        raise AcmonError(
            f"{args.dir}: no spectrogram drawn; all {len(skipped)} file(s) were unreadable or too short "
            f"(first: {skipped[0][1]})"
        )
    text = f"spectrograms: wrote {len(written)} PNG(s) to {args.out}"
    if skipped:
        text += f"; skipped {len(skipped)} file(s): " + ", ".join(str(p) for p, _ in skipped[:5])
    print(text)
    return 0
