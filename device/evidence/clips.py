"""Evidence clips: the audio around each alarm, as a WAV and a spectrogram PNG, under a disk quota."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..analysis.explain import BandRise
from ..analysis.features import FeatureParams
from ..audio.audio_io import write_wav
from ..audio.ring_buffer import RingBuffer
from ..errors import AcmonError
from ..pipeline import logmel_image
from ..state import state_root
from .marks import mark_bands
from .png import spectrogram_rgb, write_png

logger = logging.getLogger(__name__)

EVIDENCE_SUFFIXES = (".wav", ".png")
# Clips are audio from the site: the owner writes them, its group (an operator's viewer) may read them.
EVIDENCE_FILE_MODE = 0o640
EVIDENCE_DIRECTORY_MODE = 0o750
# Extra ring history beyond pre-roll + post-roll + one window: the ring is read after a whole
# block has been pushed, so the clip's start must survive one block (up to this long).
BLOCK_MARGIN_SECONDS = 5.0
BYTES_PER_MB = 1_000_000


@dataclass(frozen=True)
class PendingClip:
    """A clip waiting for its post-roll.

    Attributes:
        stem: file name without suffix.
        start_sample, end_sample: stream sample range [start, end) wanted.
        bands: the band ranges the event's start named, marked on the PNG (evidence/marks.py).
    """

    stem: str
    start_sample: int
    end_sample: int
    bands: tuple[BandRise, ...] = ()


def default_evidence_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """Where evidence goes when the config does not say: the service's state folder, never the working directory.

    systemd sets $STATE_DIRECTORY for StateDirectory= (the one writable place under
    ProtectSystem=strict); elsewhere the XDG state folder of the user (see state.state_root).
    """
    return state_root(environ) / "evidence"


def evidence_stem(event_id: str, wall_time: float) -> str:
    """File name (without suffix) of an event's evidence: UTC time then the event id's first 12 characters."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_time)) + f"_{event_id[:12]}"


def enforce_quota(directory: Path, quota_bytes: int, keep: frozenset[str] = frozenset()) -> list[Path]:
    """Delete the oldest evidence (WAV and PNG of one clip together) until the folder fits the quota.

    Args:
        directory: the evidence folder.
        quota_bytes: the largest total size of its .wav and .png files.
        keep: stems never deleted (the clip just written: a quota smaller than one
            clip keeps that clip rather than nothing).

    Returns:
        The files removed, oldest first.
    """
    groups: dict[str, list[Path]] = {}
    for path in directory.iterdir():
        if path.suffix in EVIDENCE_SUFFIXES and path.is_file():
            groups.setdefault(path.stem, []).append(path)
    sizes = {stem: sum(p.stat().st_size for p in paths) for stem, paths in groups.items()}
    total = sum(sizes.values())
    # Names start with the UTC time, so name order is age order even when mtimes were reset by a copy.
    removed: list[Path] = []
    for stem in sorted(groups):
        if total <= quota_bytes:
            break
        if stem in keep:
            continue
        for path in groups[stem]:
            path.unlink(missing_ok=True)
            removed.append(path)
        total -= sizes[stem]
    return removed


class EvidenceRecorder:
    """Cuts the audio around each alarm from the pipeline's ring buffer and writes it to disk.

    start() is called when an event starts; the clip runs from pre_roll_seconds
    before the event's start to post_roll_seconds after it, so it is written
    once the post-roll has arrived (poll()), or at the end of the stream with
    what there is (flush()). Its file name is known at start() and goes into
    the event's messages straight away. Writing happens on the analysis thread:
    a 10 s clip is a few hundred kB, written in milliseconds.

    A folder that cannot be created or a clip that cannot be written (disk full,
    read-only) never stops the monitoring: the clip is skipped and `error` says
    why until a later clip is written (the runner reports it as a health fault).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        params: FeatureParams,
        pre_roll_seconds: float,
        post_roll_seconds: float,
        quota_mb: float,
    ):
        self.directory = Path(directory)
        self.params = params
        self.pre_roll_samples = round(pre_roll_seconds * params.sample_rate_hz)
        self.post_roll_samples = round(post_roll_seconds * params.sample_rate_hz)
        self.quota_bytes = int(quota_mb * BYTES_PER_MB)
        self._pending: list[PendingClip] = []
        self.written = 0
        self.failed = 0
        self.error: str | None = None
        """Why the last clip could not be written; None once one is written again."""
        self._make_directory()

    def _make_directory(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=EVIDENCE_DIRECTORY_MODE)
        except OSError as exc:
            self.error = (
                f"evidence.directory: cannot create {self.directory} ({exc.strerror or exc}); "
                "choose a writable folder, e.g. /var/lib/acmon/evidence"
            )
            logger.error("%s; alarms are still raised, without evidence clips", self.error)
            return False
        return True

    @property
    def history_seconds(self) -> float:
        """Ring-buffer history the recorder needs, in seconds."""
        clip = self.pre_roll_samples + self.post_roll_samples + self.params.window_samples
        return clip / self.params.sample_rate_hz + BLOCK_MARGIN_SECONDS

    def start(
        self, event_id: str, start_seconds: float, wall_time: float | None = None, bands: Sequence[BandRise] = ()
    ) -> str:
        """Plan the clip of an event that starts at stream time start_seconds; returns its WAV file name.

        bands: the band ranges the event's start names, marked on the clip's spectrogram.
        """
        stem = evidence_stem(event_id, time.time() if wall_time is None else wall_time)
        centre = round(start_seconds * self.params.sample_rate_hz)
        self._pending.append(
            PendingClip(stem, max(0, centre - self.pre_roll_samples), centre + self.post_roll_samples, tuple(bands))
        )
        return stem + ".wav"

    def poll(self, ring: RingBuffer) -> list[Path]:
        """Write every clip whose post-roll is now in the ring; returns the WAV paths written."""
        ready = [c for c in self._pending if c.end_sample <= ring.samples_written]
        return self._write_all(ready, ring)

    def flush(self, ring: RingBuffer) -> list[Path]:
        """Write every pending clip with the audio available (end of stream or shutdown)."""
        return self._write_all(list(self._pending), ring)

    def _write_all(self, clips: list[PendingClip], ring: RingBuffer) -> list[Path]:
        written = []
        for clip in clips:
            self._pending.remove(clip)
            path = self._write(clip, ring)
            if path is not None:
                written.append(path)
        return written

    def _write(self, clip: PendingClip, ring: RingBuffer) -> Path | None:
        oldest = max(0, ring.samples_written - ring.capacity_samples)
        start = max(clip.start_sample, oldest)
        end = min(clip.end_sample, ring.samples_written)
        if end <= start:
            logger.warning("evidence %s: its audio is no longer in memory; not written", clip.stem)
            return None
        samples = ring.read(start, end - start)
        wav = self.directory / f"{clip.stem}.wav"
        png = self.directory / f"{clip.stem}.png"
        if not self._make_directory():
            self.failed += 1
            return None
        try:
            write_wav(wav, samples, self.params.sample_rate_hz)
            os.chmod(wav, EVIDENCE_FILE_MODE)
            image = mark_bands(spectrogram_rgb(logmel_image(samples, self.params)), clip.bands, self.params.n_mels)
            write_png(png, image)
            os.chmod(png, EVIDENCE_FILE_MODE)
            removed = enforce_quota(self.directory, self.quota_bytes, keep=frozenset({clip.stem}))
        except Exception as exc:  # a full or read-only disk (or a bug here) must not stop the monitoring
            self.failed += 1
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            self.error = f"evidence {clip.stem}: cannot write to {self.directory} ({why})"
            if isinstance(exc, (OSError, AcmonError)):
                logger.error("%s; the alarm is still raised", self.error)
            else:
                logger.exception("%s; the alarm is still raised", self.error)
            for path in (wav.with_name(wav.name + ".tmp"), png.with_name(png.name + ".tmp")):
                try:
                    path.unlink(missing_ok=True)  # the space back; a whole WAV without its PNG stays
                except OSError:
                    pass
            return None
        self.error = None
        self.written += 1
        if removed:
            logger.info("evidence quota %.0f MB: removed %d old file(s)", self.quota_bytes / BYTES_PER_MB, len(removed))
        logger.info("evidence %s: %.1f s of audio", wav, len(samples) / self.params.sample_rate_hz)
        return wav
