"""The speech guard's voice-activity detector: does an evidence clip hold someone talking?

numpy only, no weights: a monitor beside a workshop must not keep recordings of people talking,
so evidence/clips.py asks this module about each clip before writing it (evidence.speech_guard).

How it tells a voice from a machine, on one clip (typically 10 s, any rate from 8 kHz up):

1. Frames of 40 ms every 20 ms; power spectra in the telephone band, 300-3400 Hz.
2. The machine's steady sound is divided out: per frequency bin, the mean power of the clip's
   quieter frames (from their 30th percentile) is the background the machine makes all the time,
   its tones included. What stands above it is what comes and goes.
3. Voicing, a harmonic comb: for each pitch from 70 to 400 Hz (24 steps an octave), log(1 + power
   over the background) at its harmonics in 300-1600 Hz minus midway between them, as a z-score
   against noise (log(1 + power over the background) of a noise bin has a standard deviation of 0.42).
   Only to 1.6 kHz: above it a voice's harmonics are weak and
   smear when the pitch glides within a frame.
4. A voice's pitch is continuous: each frame's voicing is the best pitch track through the 5
   frames (120 ms, a vowel) ending there, moving at most a semitone a frame, summed and divided
   by sqrt(5). Noise's best comb jumps about and adds up less.
5. Against the clip itself: each frame's voicing as a robust z-score against the clip's median
   and median absolute deviation. A machine's voicing is much the same all clip long; speech
   stands out of it. Score = the highest mean of the 10 most voiced frames (200 ms of vowels)
   in any 1 s stretch (every 0.25 s). A clip that is speech all through has no machine-only
   part to compare with: the same mean of the voicing itself, from ABSOLUTE_AT_HALF (far above
   every development machine's), counts too.
6. Probability = logistic((score - SCORE_AT_HALF) / SCORE_SCALE). SCORE_AT_HALF is the 98th
   percentile of the score over the development machines (benchmarks/bench_speech_guard.py:
   the threshold was chosen on the dev half of the speech and machine types, reported on the
   rest); the default threshold 0.5 is that point.

Tried in earlier versions and dropped: an autocorrelation pitch detector (band-limited noise left
after the background looked voiced), a log-power comb (a weak voice's harmonics did not add up),
and as segment features the share of voiced frames, the 2-8 Hz syllabic modulation of the voicing
and the range of the pitch: with those versions' voicing they did not separate speech from the
development machines; they were not tried again with the present voicing.

What it misses: whispers (no voicing), speech far below the machine (the README's table: most
speech at -12 dB and below), a clip that is speech from start to end with no machine-only part
to compare with can score lower. What it can take for speech: sounds whose harmonic pitch moves
(a motor running up, a siren, music, some toy machines): it then withholds evidence that was not
speech, which costs evidence, not privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_SECONDS = 0.04
HOP_SECONDS = 0.02
BAND_HZ = (300.0, 3400.0)
F0_HZ = (70.0, 400.0)
MIN_SAMPLE_RATE_HZ = 8000  # the telephone band needs a Nyquist frequency above 3.4 kHz
FLOOR_PERCENTILE = 30.0  # of each bin's power over the clip: the machine's steady background
FLOOR_TO_MEAN = 0.357  # the 30th percentile of a noise bin's power (exponential) is 0.357 times its mean
COMB_HZ = (300.0, 1600.0)  # harmonics looked at
F0_STEPS_PER_OCTAVE = 24
FFT_BINS_PER_HZ_FRAME = 2  # zero padding: FFT length >= 2 frames
RATIO_STD = 0.42  # standard deviation of log(1 + x) for a noise bin's power over its mean x (exponential)
TRACK_FRAMES = 5  # a pitch track of 5 frames: 120 ms, a vowel
PITCH_STEP_OCTAVES = 1 / 12  # how far a voice's pitch may move from one frame (20 ms) to the next
SEGMENT_SECONDS = 1.0
SEGMENT_HOP_SECONDS = 0.25
TOP_FRAMES = 10
MIN_SPREAD = 0.25  # floor of the clip's median absolute deviation (a silent clip has none)
MAX_Z = 30.0
SCORE_AT_HALF = 8.8  # the development machines' 98th percentile (8.79)
SCORE_SCALE = 1.5
# Voicing alone (not against the clip) from which a clip is speech: far above every development machine's (at
# most 12), below every alsa-utils word's alone (37 to 61).
ABSOLUTE_AT_HALF = 30.0
MAX_SECONDS = 130.0  # longer clips are judged on their first 130 s (evidence clips are at most 125 s)
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class SpeechVerdict:
    """What the detector found in one clip.

    Attributes:
        probability: the speech probability, 0 to 1 (module docstring, step 6).
        speech: probability >= the threshold asked for.
        at_seconds: where the most voice-like 1 s of the clip starts.
        score: that second's score (step 5).
    """

    probability: float
    speech: bool
    at_seconds: float
    score: float


@dataclass(frozen=True)
class FrameFeatures:
    """Per-frame voicing of one clip (frame k starts at k * hop_seconds)."""

    harmonicity: np.ndarray
    f0_hz: np.ndarray
    hop_seconds: float


def _frames(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    n = 1 + (len(x) - frame) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n, frame), strides=(x.strides[0] * hop, x.strides[0]))


def _comb_matrix(freqs: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate f0s, matrix): row c sums the power ratio at f0_c's harmonics minus midway between, as a z-score."""
    f0s = F0_HZ[0] * 2.0 ** (np.arange(0, np.log2(F0_HZ[1] / F0_HZ[0]) + 1e-9, 1 / F0_STEPS_PER_OCTAVE))
    df = freqs[1] - freqs[0]
    band_bins = np.flatnonzero(band)
    matrix = np.zeros((len(f0s), len(band_bins)))
    lo, hi = COMB_HZ
    for c, f0 in enumerate(f0s):
        k = np.arange(np.ceil(lo / f0), np.floor(hi / f0) + 1)
        peaks = np.round(k * f0 / df).astype(int) - band_bins[0]
        valleys = np.round((k + 0.5) * f0 / df).astype(int) - band_bins[0]
        keep = (peaks >= 0) & (valleys < len(band_bins)) & (peaks < len(band_bins))
        if keep.sum() < 2:
            continue
        scale = 1.0 / (RATIO_STD * np.sqrt(2.0 * keep.sum()))
        np.add.at(matrix[c], peaks[keep], scale)
        np.add.at(matrix[c], valleys[keep], -scale)
    return f0s, matrix


def frame_features(samples: np.ndarray, sample_rate_hz: int) -> FrameFeatures:
    """Voicing of each 40 ms frame of a mono clip, against the clip's steady background.

    Raises:
        ValueError: a sample rate below 8 kHz (no telephone band to look at).
    """
    if sample_rate_hz < MIN_SAMPLE_RATE_HZ:
        raise ValueError(f"speech guard: a sample rate of {sample_rate_hz} Hz is below {MIN_SAMPLE_RATE_HZ} Hz")
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64).reshape(-1))[: int(MAX_SECONDS * sample_rate_hz)]
    frame = round(FRAME_SECONDS * sample_rate_hz)
    hop = round(HOP_SECONDS * sample_rate_hz)
    if len(x) < frame + hop:
        return FrameFeatures(np.zeros(0), np.zeros(0), hop / sample_rate_hz)
    x = np.ascontiguousarray(x - x.mean())
    nfft = 1 << (FFT_BINS_PER_HZ_FRAME * frame - 1).bit_length()
    spectra = np.fft.rfft(_frames(x, frame, hop) * np.hanning(frame), nfft)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate_hz)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    s = spectra[:, band]
    p = s.real**2 + s.imag**2
    # The background: each bin's mean over its quieter frames (a steady machine, its tones included).
    floor = np.maximum(np.percentile(p, FLOOR_PERCENTILE, axis=0) / FLOOR_TO_MEAN, 1e-20)
    # log(1 + power over the background): linear for a weak voice (its harmonics add up), logarithmic for a
    # loud one (its harmonics stand above its valleys however far both are above a quiet machine).
    ratio = np.log1p(p / floor)
    f0s, matrix = _comb_matrix(freqs, band)
    comb = ratio @ matrix.T
    # A voice's pitch is continuous: the best pitch track over TRACK_FRAMES frames (moving at most
    # PITCH_STEP_OCTAVES a frame) adds its frames' combs, and noise, whose best comb jumps about, adds less.
    reach = max(1, round(PITCH_STEP_OCTAVES * F0_STEPS_PER_OCTAVE))
    track = comb.copy()
    for _ in range(TRACK_FRAMES - 1):
        padded = np.pad(track[:-1], ((0, 0), (reach, reach)), constant_values=-np.inf)
        reachable = np.max([padded[:, d : d + comb.shape[1]] for d in range(2 * reach + 1)], axis=0)
        track = np.concatenate([np.full((1, comb.shape[1]), -np.inf), comb[1:] + reachable])
    finite = np.isfinite(track)  # the first frames have no whole track: they get the clip's least voicing
    track = np.where(finite, track, track[finite].min() if finite.any() else 0.0) / np.sqrt(TRACK_FRAMES)
    best = np.argmax(track, axis=1)
    harmonicity = track[np.arange(len(best)), best]
    f0 = f0s[best]
    return FrameFeatures(harmonicity, f0, hop / sample_rate_hz)


def _clip_score(harmonicity: np.ndarray, hop_seconds: float) -> tuple[float, float]:
    """(score, start of its 1 s stretch in seconds): see the module's step 5."""
    n = len(harmonicity)
    if n == 0:
        return 0.0, 0.0
    median = float(np.median(harmonicity))
    spread = max(float(np.median(np.abs(harmonicity - median))), MIN_SPREAD)
    z = np.clip((harmonicity - median) / spread, 0.0, MAX_Z)
    seg = min(round(SEGMENT_SECONDS / hop_seconds), n)
    step = round(SEGMENT_HOP_SECONDS / hop_seconds)
    top = min(TOP_FRAMES, seg)

    def top_means(values: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(values, seg)[::step]
        return np.partition(windows, seg - top, axis=1)[:, seg - top :].mean(axis=1)

    # A clear voice with no machine-only part to compare with (a clip that is all speech) is judged on its
    # voicing alone, scaled so that ABSOLUTE_AT_HALF meets SCORE_AT_HALF.
    scores = np.maximum(top_means(z), top_means(harmonicity) * (SCORE_AT_HALF / ABSOLUTE_AT_HALF))
    best = int(np.argmax(scores))
    return float(scores[best]), best * step * hop_seconds


def speech_probability(score: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(score - SCORE_AT_HALF) / SCORE_SCALE)))


def analyse_clip(samples: np.ndarray, sample_rate_hz: int, threshold: float = DEFAULT_THRESHOLD) -> SpeechVerdict:
    """The speech guard's verdict on one mono clip: its speech probability against threshold.

    Raises:
        ValueError: a sample rate below 8 kHz.
    """
    ff = frame_features(samples, sample_rate_hz)
    score, at = _clip_score(ff.harmonicity, ff.hop_seconds)
    p = speech_probability(score) if len(ff.harmonicity) else 0.0
    return SpeechVerdict(p, p >= threshold, at, score)
