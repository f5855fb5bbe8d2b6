"""Evidence clips: the audio around each alarm, as a WAV and a spectrogram PNG, under a disk quota."""

from __future__ import annotations

import calendar
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.explain import BandRise
from ..analysis.features import FeatureParams
from ..analysis.speech import MIN_SAMPLE_RATE_HZ, analyse_clip
from ..audio.audio_io import write_wav
from ..audio.ring_buffer import RingBuffer
from ..errors import AcmonError
from ..pipeline import logmel_image
from ..state import state_root
from .marks import mark_bands
from .png import spectrogram_rgb, write_png

logger = logging.getLogger(__name__)

EVIDENCE_SUFFIXES = (".wav", ".flac", ".png")
AUDIO_SUFFIXES = (".wav", ".flac")
# A clip the speech guard withheld leaves only this: one line saying why (never audio nor a spectrogram).
WITHHELD_SUFFIX = ".withheld"
WITHHELD_SPEECH = "evidence withheld: speech detected"
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


# An evidence file's name: evidence_stem() (UTC time, first 12 hex digits of the event id) and one of its suffixes.
EVIDENCE_NAME = re.compile(
    r"[0-9]{8}T[0-9]{6}Z_[0-9a-f]{12}(" + "|".join(re.escape(suffix) for suffix in EVIDENCE_SUFFIXES) + ")"
)


def evidence_stem(event_id: str, wall_time: float) -> str:
    """File name (without suffix) of an event's evidence: UTC time then the event id's first 12 characters."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_time)) + f"_{event_id[:12]}"


def _clip_time(stem: str, paths: list[Path]) -> float:
    """When a clip was made: from its name (UTC time first), else its file's modification time."""
    try:
        return calendar.timegm(time.strptime(stem[:16], "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return min(p.stat().st_mtime for p in paths)


def enforce_quota(
    directory: Path,
    quota_bytes: int,
    keep: frozenset[str] = frozenset(),
    max_clips: int | None = None,
    max_age_seconds: float | None = None,
    now: float | None = None,
) -> list[Path]:
    """Delete the oldest evidence (WAV and PNG of one clip together) until the folder fits the quota, holds
    at most max_clips clips, and none older than max_age_seconds.

    Args:
        directory: the evidence folder.
        quota_bytes: the largest total size of its .wav and .png files.
        keep: stems never deleted (the clip just written: a quota smaller than one
            clip keeps that clip rather than nothing).
        max_clips, max_age_seconds: further limits; None = none.

    Returns:
        The files removed, oldest first.
    """
    groups: dict[str, list[Path]] = {}
    for path in directory.iterdir():
        if (path.suffix in EVIDENCE_SUFFIXES or path.suffix == WITHHELD_SUFFIX) and path.is_file():
            groups.setdefault(path.stem, []).append(path)
    sizes = {stem: sum(p.stat().st_size for p in paths) for stem, paths in groups.items()}
    total = sum(sizes.values())
    # Names start with the UTC time, so name order is age order even when mtimes were reset by a copy.
    removed: list[Path] = []
    count = len(groups)
    oldest_allowed = None if max_age_seconds is None else (time.time() if now is None else now) - max_age_seconds
    for stem in sorted(groups):
        too_old = oldest_allowed is not None and _clip_time(stem, groups[stem]) < oldest_allowed
        too_many = max_clips is not None and count > max_clips
        if total <= quota_bytes and not too_old and not too_many:
            break  # oldest first: every later clip is newer, and the totals only went down
        if stem in keep:
            continue
        count -= 1
        for path in groups[stem]:
            path.unlink(missing_ok=True)
            removed.append(path)
        total -= sizes[stem]
    return removed


def _flac_writer():
    """The soundfile module, or None (logged) when it cannot be imported: clips are then written as WAV."""
    try:
        import soundfile  # noqa: PLC0415 - 3 MB of libsndfile only for evidence.format: flac
    except (ImportError, OSError) as exc:
        logger.warning(
            "evidence.format flac needs the soundfile package (pip install 'acmon[flac]'; %s): writing WAV clips", exc
        )
        return None
    return soundfile


def write_flac(soundfile, path: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """16-bit FLAC of float samples (full scale 1, clipped as write_wav does), written atomically via path.tmp."""
    pcm = np.clip(np.round(np.nan_to_num(np.asarray(samples, np.float64)) * 32768.0), -32768, 32767).astype(np.int16)
    tmp = path.with_name(path.name + ".tmp")
    soundfile.write(str(tmp), pcm, sample_rate_hz, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def read_flac_as_float(path: Path) -> tuple[np.ndarray, int]:
    """A FLAC clip's samples (float32, full scale 1) and rate; needs soundfile (only where FLAC clips were written)."""
    import soundfile  # noqa: PLC0415

    data, rate = soundfile.read(str(path), dtype="float32")
    return data, int(rate)


MAX_EVIDENCE_FILE_BYTES = 16 * 1024 * 1024
EVIDENCE_CHUNK_BYTES = 64 * 1024  # get_evidence's MQTT messages: under any broker's default message limit


def evidence_files(directory: Path, event_id: str) -> list[Path]:
    """The evidence files (WAV, PNG) of one event, by its id (32 hex digits; names carry its first 12)."""
    if not (len(event_id) == 32 and all(c in "0123456789abcdef" for c in event_id)):
        raise ValueError(f"event id {event_id[:40]!r} is not 32 lower-case hex digits")
    return sorted(p for p in directory.glob(f"*_{event_id[:12]}.*") if p.suffix in EVIDENCE_SUFFIXES and p.is_file())


def withheld_reason(directory: Path, event_id: str) -> str | None:
    """Why an event's clip was withheld (the speech guard's one line), or None when it was not."""
    for path in directory.glob(f"*_{event_id[:12]}{WITHHELD_SUFFIX}"):
        try:
            with open(path, "rb") as f:  # at most 200 bytes: the line is ours, the file may not be
                line = f.read(200).decode(errors="replace").splitlines()
        except OSError:
            line = []
        return (line[0].strip() if line else "") or WITHHELD_SPEECH
    return None


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
        max_clips: int | None = None,
        max_age_days: float | None = None,
        audio_format: str = "wav",
        speech_guard: bool = False,
        speech_threshold: float = 0.5,
    ):
        """audio_format: "wav", or "flac" (about 40 % smaller; needs the soundfile package, else WAV with a warning).

        speech_guard: judge each clip with analysis/speech.py first; a clip whose speech probability is
        speech_threshold or more is not written (neither audio nor PNG): a `<stem>.withheld` line says so.
        """
        self.directory = Path(directory)
        self._soundfile = _flac_writer() if audio_format == "flac" else None
        self.suffix = ".flac" if self._soundfile is not None else ".wav"
        self.max_clips = max_clips
        self.max_age_seconds = None if max_age_days is None else max_age_days * 86400
        self.params = params
        self.pre_roll_samples = round(pre_roll_seconds * params.sample_rate_hz)
        self.post_roll_samples = round(post_roll_seconds * params.sample_rate_hz)
        self.quota_bytes = int(quota_mb * BYTES_PER_MB)
        self._pending: list[PendingClip] = []
        self.written = 0
        self.failed = 0
        self.speech_guard = speech_guard
        self.speech_threshold = speech_threshold
        self.withheld = 0
        self.withheld_stems: dict[str, str] = {}  # stem -> the line saying why, for the runner's next event message
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
        return stem + self.suffix

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
        wav = self.directory / f"{clip.stem}{self.suffix}"
        png = self.directory / f"{clip.stem}.png"
        if not self._make_directory():
            self.failed += 1
            return None
        if self.speech_guard:
            why = self._speech(clip.stem, samples)
            if why is not None:
                self._withhold(clip.stem, why)
                return None
        try:
            if self._soundfile is not None:
                write_flac(self._soundfile, wav, samples, self.params.sample_rate_hz)
            else:
                write_wav(wav, samples, self.params.sample_rate_hz)
            os.chmod(wav, EVIDENCE_FILE_MODE)
            image = mark_bands(spectrogram_rgb(logmel_image(samples, self.params)), clip.bands, self.params.n_mels)
            write_png(png, image)
            os.chmod(png, EVIDENCE_FILE_MODE)
            removed = enforce_quota(
                self.directory, self.quota_bytes, frozenset({clip.stem}), self.max_clips, self.max_age_seconds
            )
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
            logger.info("evidence retention: removed %d old file(s)", len(removed))
        logger.info("evidence %s: %.1f s of audio", wav, len(samples) / self.params.sample_rate_hz)
        return wav

    def _speech(self, stem: str, samples: np.ndarray) -> str | None:
        """The line saying why a clip is withheld, or None to write it. A rate the guard cannot judge withholds."""
        rate = self.params.sample_rate_hz
        if rate < MIN_SAMPLE_RATE_HZ:
            return f"evidence withheld: the speech guard cannot judge audio sampled below {MIN_SAMPLE_RATE_HZ} Hz"
        verdict = analyse_clip(samples, rate, self.speech_threshold)
        logger.info(
            "evidence %s: speech probability %.2f (threshold %g)", stem, verdict.probability, self.speech_threshold
        )
        if not verdict.speech:
            return None
        return f"{WITHHELD_SPEECH} (probability {verdict.probability:.2f} at {verdict.at_seconds:.1f} s of the clip)"

    def _withhold(self, stem: str, why: str) -> None:
        """Write the one line instead of the clip (kept under the same retention), and count it."""
        self.withheld += 1
        self.withheld_stems[stem] = why
        while len(self.withheld_stems) > 100:
            self.withheld_stems.pop(next(iter(self.withheld_stems)))
        logger.warning("evidence %s: %s; no audio or spectrogram kept", stem, why)
        marker = self.directory / f"{stem}{WITHHELD_SUFFIX}"
        try:
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(why + "\n")
            os.chmod(tmp, EVIDENCE_FILE_MODE)
            os.replace(tmp, marker)
            enforce_quota(self.directory, self.quota_bytes, frozenset({stem}), self.max_clips, self.max_age_seconds)
        except OSError as exc:
            self.error = f"evidence {stem}: cannot write to {self.directory} ({exc.strerror or exc})"
            logger.error("%s; the alarm is still raised", self.error)
            return
        self.error = None
